"""The trainer end to end on a tiny SegFormer and generated data: real runs, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from segkit.cli import main as cli
from segkit.config.recipe import recipe_from_dict

TINY = {
    "name": "tiny",
    "data": {"format": "synthetic", "synthetic_samples": 24, "synthetic_size": 64},
    "classes": {"select": ["circle", "square"], "others": "background"},
    "augment": {"crop_size": 64, "scale": [0.8, 1.2]},
    "model": {"family": "segformer", "size": "tiny"},
    "train": {"epochs": 3, "batch_size": 4, "lr": 0.003, "backbone_lr_scale": 1.0, "num_workers": 0,
              "log_every": 1, "tracker": "tensorboard", "num_overlays": 2, "warmup_steps": 2},
}


def write_recipe(tmp_path: Path, **sections) -> Path:
    values = json.loads(json.dumps(TINY))
    for section, changes in sections.items():
        values.setdefault(section, {}).update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_run_folder_holds_every_artifact(finished_run: Path):
    for name in ("recipe.yaml", "metrics.json", "per_class.md", "confusion.png", "train_log.jsonl",
                 "class_stats.json", "model/config.json", "model/model.safetensors", "model/preprocessor_config.json"):
        assert (finished_run / name).is_file(), name
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"background", "circle", "square"}
    assert 0.0 <= metrics["strict"]["mIoU"] <= 1.0
    assert "calibration" not in metrics  # off unless a recipe asks for it (train.calibrate)
    table = (finished_run / "per_class.md").read_text()
    assert "circle" in table and "square" in table
    config = json.loads((finished_run / "model/config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "circle", "2": "square"}
    overlays = sorted((finished_run / "overlays").glob("*.png"))
    assert len(overlays) == 2
    with Image.open(overlays[0]) as img:
        assert img.width > img.height  # image | truth | prediction side by side
    with Image.open(finished_run / "confusion.png") as img:
        assert img.size[0] > 50
    assert yaml.safe_load((finished_run / "recipe.yaml").read_text())["train"]["epochs"] == 3
    checkpoints = sorted((finished_run / "checkpoints").glob("step-*"))
    best = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["best_step"]
    assert 1 <= len(checkpoints) <= 3  # keep_last 2, plus the best
    assert f"step-{best:07d}" in [c.name for c in checkpoints]
    assert list((finished_run / "logs").rglob("events.out.tfevents.*"))  # TensorBoard through accelerate


def test_loss_falls(finished_run: Path):
    losses = [r["loss"] for r in map(json.loads, (finished_run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) >= 10
    k = len(losses) // 3
    assert np.mean(losses[-k:]) < 0.8 * np.mean(losses[:k])


def test_saved_model_reloads_with_same_predictions(finished_run: Path, tmp_path: Path):
    """model/ loads with plain transformers and scores exactly as the run reported."""
    from transformers import SegformerForSemanticSegmentation

    from segkit.models import load_model

    ours = load_model(finished_run / "model").eval()
    hf = SegformerForSemanticSegmentation.from_pretrained(finished_run / "model").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x).scores.argmax(1), hf(pixel_values=x).logits.argmax(1))
    assert cli(["evaluate", str(finished_run), "--split", "test", "--output", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    reported = json.loads((finished_run / "metrics.json").read_text())
    assert again["split"] == reported["split"] == "test"
    assert again["strict"]["mIoU"] == pytest.approx(reported["strict"]["mIoU"], abs=1e-12)


def test_unknown_recipe_key_names_the_closest(tmp_path: Path, capsys):
    recipe = write_recipe(tmp_path, train={"batchsize": 4})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train.batchsize" in err and "Did you mean 'train.batch_size'" in err


def test_wrong_type_and_range_are_reported_together(tmp_path: Path, capsys):
    recipe = write_recipe(tmp_path, train={"batch_size": "four", "lr": 5.0})
    assert cli(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "train.lr" in err


def test_output_dir_with_another_run_is_refused(finished_run: Path, tmp_path: Path, capsys):
    recipe = write_recipe(tmp_path)
    assert cli(["train", str(recipe), "--output-dir", str(finished_run)]) == 2
    assert "--resume" in capsys.readouterr().err and (finished_run / "model").is_dir()


def test_checkpoint_from_another_label_set_is_refused(finished_run: Path, tmp_path: Path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    recipe = write_recipe(tmp_path, classes={"select": ["circle", "triangle"]})
    assert cli(["train", str(recipe), "--output-dir", str(copy), "--resume"]) == 2
    assert "trained for classes" in capsys.readouterr().err


def test_recipe_overrides_reach_the_run(tmp_path: Path):
    from segkit.config.recipe import load_recipe

    recipe = load_recipe(write_recipe(tmp_path), ["train.lr=1e-4", "model.size=tiny", "classes.others=ignore"])
    assert recipe.train.lr == 1e-4 and recipe.classes.others == "ignore"


def _train_subprocess(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segkit.cli", "train", str(recipe), "--output-dir", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    last = sorted((out / "checkpoints").glob("step-*"))[-1]
    return load_file(str(last / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path: Path):
    """A run killed with SIGKILL after a checkpoint and resumed ends with the same weights."""
    recipe = write_recipe(tmp_path, train={"max_steps": 12, "checkpoint_every": 3, "eval_every": 6,
                                           "num_workers": 1, "keep_last": 10})
    full = _train_subprocess(recipe, tmp_path / "full")
    assert full.wait(timeout=300) == 0, full.stdout.read()

    killed = _train_subprocess(recipe, tmp_path / "killed")
    deadline = time.time() + 240
    while not (tmp_path / "killed/checkpoints/step-0000006/trainer_state.json").exists():
        assert killed.poll() is None and time.time() < deadline, "run ended before its 6th step"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = _train_subprocess(recipe, tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()

    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path):
    recipe = write_recipe(tmp_path, train={"max_steps": 2000, "eval_every": 1000})
    proc = _train_subprocess(recipe, tmp_path / "out")
    deadline = time.time() + 240
    while not (tmp_path / "out/train_log.jsonl").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "--resume" in output
    assert list((tmp_path / "out/checkpoints").glob("step-*/trainer_state.json"))


def test_recipe_dict_roundtrip_is_valid():
    assert recipe_from_dict(TINY).model.size == "tiny"


def test_streamed_dataset_trains_with_a_step_budget(tmp_path: Path, monkeypatch):
    """datasets' streaming mode: no length, no random access; training still writes the run folder."""
    import segkit.data.source as source
    from tests.test_data_sources import hub_parquet

    monkeypatch.setattr(source, "STREAM_VAL_ROWS", 4)  # a local stream does not report its size
    hub_parquet(tmp_path / "hub", "train", 16, "image", "label", 3)
    data = {"format": "hub", "path": str(tmp_path / "hub"), "streaming": True, "class_names": ["bg", "a", "b", "c"]}
    recipe = write_recipe(tmp_path, data=data, classes={"select": ["a", "b"]},
                          augment={"crop_size": 32, "scale": [1.0, 1.0]}, train={"max_steps": 3, "batch_size": 2})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"background", "a", "b"}
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]


def test_streamed_dataset_needs_a_step_budget(tmp_path: Path, capsys):
    from tests.test_data_sources import hub_parquet

    hub_parquet(tmp_path / "hub", "train", 8, "image", "label", 3)
    hub_parquet(tmp_path / "hub", "validation", 2, "image", "label", 3)
    data = {"format": "hub", "path": str(tmp_path / "hub"), "streaming": True, "class_names": ["bg", "a", "b", "c"]}
    recipe = write_recipe(tmp_path, data=data, classes={"select": ["a", "b"]})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_early_stopping_ends_the_run(tmp_path: Path):
    """A learning rate too small to change predictions: the second evaluation is no better.

    MaskFormer, because it has no BatchNorm: running statistics move the predictions of a model
    with BatchNorm (SegFormer's decode head) at any learning rate, so "no better" would be luck."""
    recipe = write_recipe(tmp_path, model={"family": "maskformer", "size": "tiny"},
                          train={"lr": 1e-12, "eval_every": 1, "early_stopping": 1, "max_steps": 50,
                                 "tracker": "none", "warmup_steps": 0})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 0
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval" in r]
    assert [r["best"] for r in evals] == [True, False]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["best_step"] == 1


def test_patch_model_scores_full_frames_of_any_size(tmp_path: Path):
    """eval_mode none: 60-px frames reach an 8-px-patch ViT padded, and are scored at 60x60."""
    recipe = write_recipe(tmp_path, data={"synthetic_samples": 8, "synthetic_size": 60},
                          model={"family": "vit", "size": "tiny", "head": "multilevel"},
                          augment={"crop_size": 48, "scale": [1.0, 1.0], "eval_mode": "none"},
                          train={"max_steps": 2, "tracker": "none"})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    stats = json.loads((tmp_path / "out" / "class_stats.json").read_text())
    assert metrics["num_pixels"] == sum(c["gt_pixels"] for c in metrics["per_class"].values())
    # the test split is a quarter of 8 images; above 2*48*48 only if labels kept their 60x60 size
    assert 2 * 48 * 48 < metrics["num_pixels"] <= 2 * 60 * 60
    assert stats["names"] == ["background", "circle", "square"]


@pytest.mark.parametrize("family, accum", [("mask2former", 1), ("segformer", 2)])
def test_trainer_runs_family_with_accumulation(tmp_path: Path, family: str, accum: int):
    """Mask2Former is in no shipped recipe, so it goes through the trainer here; accumulation
    turns 4 batches into 2 optimizer steps."""
    recipe = write_recipe(tmp_path, model={"family": family, "size": "tiny"},
                          train={"max_steps": 2, "grad_accum": accum, "batch_size": 2, "tracker": "none"})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 0
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    state = json.loads(next((tmp_path / "out" / "checkpoints").glob("step-0000002/trainer_state.json")).read_text())
    assert state["batches_in_epoch"] == 2 * accum
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 2
    config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "circle", "2": "square"}
