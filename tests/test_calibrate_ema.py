"""The calibrated head, EMA of weights and `select_by` on real tiny runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from segkit.cli import main as cli
from segkit.config.recipe import load_recipe
from segkit.evaluation.scoring import evaluate_saved
from segkit.labels import LabelSet
from segkit.models import load_model
from segkit.run_folder import RunFolder
from segkit.train.calibrate import MARGIN, ValSample, confirm_calibration, fit_calibration, fit_offsets, miou
from tests.test_train import write_recipe

SHORT = {"epochs": 1, "max_steps": 16, "eval_every": 8, "tracker": "none", "num_overlays": 0}
LONGER = {"max_steps": 60, "eval_every": 30}
"""Long enough for the tiny model to predict every class, so that offsets have something to move."""


def _train(tmp_path: Path, name: str, **train) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    recipe = write_recipe(folder, train={**SHORT, **train})
    assert cli(["train", str(recipe), "--output-dir", str(folder / "out")]) == 0
    return folder / "out"


def test_offsets_change_the_bias_only_and_the_saved_model_carries_them(tmp_path: Path, capsys):
    plain = _train(tmp_path, "plain", calibrate=False, **LONGER)
    calibrated = _train(tmp_path, "calibrated", calibrate=True, **LONGER)
    a, b = load_file(plain / "model/model.safetensors"), load_file(calibrated / "model/model.safetensors")
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"decode_head.classifier.bias"}
    metrics = json.loads((calibrated / "metrics.json").read_text())
    cal = metrics["calibration"]
    offsets = torch.tensor(list(cal["offsets"].values()))
    assert cal["kept"] and offsets.abs().max() <= 3.0 and offsets.abs().sum() > 0
    assert torch.allclose(b["decode_head.classifier.bias"] - a["decode_head.classifier.bias"], offsets, atol=1e-6)
    # the saved model scores as reported: it holds the calibrated head, whoever loads it
    assert "calibration (kept: train.calibrate: true): offsets background " in capsys.readouterr().out
    again = evaluate_saved(calibrated / "model", load_recipe(calibrated / "recipe.yaml"), "test", tmp_path / "eval")
    assert again["test"]["strict"]["mIoU"] == pytest.approx(metrics["strict"]["mIoU"], abs=1e-9)


def test_auto_never_lowers_val_miou(tmp_path: Path):
    run = _train(tmp_path, "auto", calibrate="auto", **LONGER)
    metrics = json.loads((run / "metrics.json").read_text())
    cal = metrics["calibration"]
    val_after = metrics["other_splits"]["val"]["strict"]["mIoU"]
    if cal["kept"]:
        assert val_after >= cal["val_before"]["strict_mIoU"]
    else:
        assert val_after == pytest.approx(cal["val_before"]["strict_mIoU"], abs=1e-9)


def test_offsets_that_lower_the_reports_val_miou_are_taken_out_of_the_saved_model(tmp_path: Path):
    """`auto`'s last check reads the report's val figures: a folded model that scores below val
    before is unfolded, on disk too, and the calibration says why."""
    from accelerate import Accelerator

    run = _train(tmp_path, "calibrated", calibrate=True, **LONGER)
    cal = json.loads((run / "metrics.json").read_text())["calibration"]
    assert cal["kept"]
    folded = load_file(run / "model/model.safetensors")["decode_head.classifier.bias"]
    model = load_model(run / "model")
    cfg = load_recipe(run / "recipe.yaml", ["train.calibrate=auto"]).train
    before = cal["val_before"]["strict_mIoU"]
    same = {"strict": {"mIoU": before}, "foreground": {"mIoU": 1.0}}
    assert not confirm_calibration(model, cal, same, RunFolder(run), Accelerator(cpu=True), cfg)
    fell = {"strict": {"mIoU": before - 0.01}, "foreground": {"mIoU": 1.0}}
    assert confirm_calibration(model, cal, fell, RunFolder(run), Accelerator(cpu=True), cfg)
    assert not cal["kept"] and cal["why"] == "val mIoU fell on the whole split"
    unfolded = load_file(run / "model/model.safetensors")["decode_head.classifier.bias"]
    assert torch.allclose(folded - unfolded, torch.tensor(list(cal["offsets"].values())), atol=1e-6)


def test_fit_undoes_a_biased_class():
    """Scores that over-predict class 1 by 2 logits: the fit finds an offset that cancels it."""
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 3, (6000,), generator=gen)
    scores = torch.nn.functional.one_hot(targets, 3).float() * 2 + torch.randn(6000, 3, generator=gen)
    scores[:, 1] += 2.0
    offsets = fit_offsets(scores, targets)
    assert miou((scores + offsets).argmax(1), targets, 3) > miou(scores.argmax(1), targets, 3) + 0.05
    assert offsets[1] - offsets[[0, 2]].mean() < -1.0


def _sample(biased_images: range, images: int = 10, per_image: int = 600) -> ValSample:
    """Scores of 3 classes over `images` val images; class 1 over-scored by 2 logits on `biased_images`."""
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 3, (images * per_image,), generator=gen)
    scores = torch.nn.functional.one_hot(targets, 3).float() * 2 + torch.randn(len(targets), 3, generator=gen)
    image = torch.arange(images).repeat_interleave(per_image)
    scores[torch.isin(image, torch.tensor(list(biased_images))), 1] += 2.0
    return ValSample(scores, targets, image)


def test_held_out_halves_keep_a_bias_the_whole_split_shares_and_refuse_one_that_half_has():
    """The check holds out contiguous halves, both ways round. A bias of the whole split is found
    from either half; one that only the first half has (a scene the second never shows) does not
    carry, although alternate images would have called it a gain."""
    labels = LabelSet(names=("background", "a", "b"), background=0)

    def worst_gain(sample: ValSample) -> float:
        found = fit_calibration(sample, labels, "strict")
        assert len(found["held_out_before"]) == 2
        assert found["gain"] == min(a - b for a, b in zip(found["held_out_after"], found["held_out_before"]))
        return found["gain"]

    assert worst_gain(_sample(range(10))) >= MARGIN
    assert worst_gain(_sample(range(5))) < MARGIN
    half = _sample(range(5))
    even = half.image % 2 == 0
    offsets = fit_offsets(half.scores[even], half.targets[even])  # the interleaved check it replaces
    gain = miou((half.scores[~even] + offsets).argmax(1), half.targets[~even], 3) - miou(
        half.scores[~even].argmax(1), half.targets[~even], 3)
    assert gain >= MARGIN


def test_ema_is_exported_and_resumes_exactly(tmp_path: Path):
    run = _train(tmp_path, "ema", ema_decay=0.9, select_by="foreground", checkpoint_every=8, calibrate=False)
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval"]["val/foreground_mIoU"] for r in records if "eval" in r}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["select_by"] == "foreground" and metrics["best_step"] == max(evals, key=lambda s: (evals[s], -s))
    last = run / "checkpoints" / "step-0000016"
    ema = torch.load(last / "custom_checkpoint_0.pkl", weights_only=True)
    raw = load_file(last / "model.safetensors")
    exported = load_file(run / "model/model.safetensors")
    key = "decode_head.classifier.weight"
    assert not torch.equal(raw[f"model.{key}"], ema["shadow"][f"model.{key}"])  # the average is not the raw weights
    if metrics["best_step"] == 16:
        assert torch.allclose(exported[key], ema["shadow"][f"model.{key}"])
    # a copy cut back to step 8 and resumed ends with the same weights and the same average
    shutil.copytree(run, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-0000016")
    assert cli(["train", str(tmp_path / "ema" / "recipe.yaml"), "--output-dir", str(tmp_path / "resumed"),
                "--resume"]) == 0
    again = tmp_path / "resumed" / "checkpoints" / "step-0000016"
    assert all(torch.equal(v, load_file(again / "model.safetensors")[k]) for k, v in raw.items())
    resumed_ema = torch.load(again / "custom_checkpoint_0.pkl", weights_only=True)
    assert all(torch.equal(v, resumed_ema["shadow"][k]) for k, v in ema["shadow"].items())
