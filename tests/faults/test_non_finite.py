"""A NaN planted in the loss at step k, for real: a forward hook on the training loss module (the
guard under test never sees anything but a non-finite loss tensor)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import torch
from safetensors.torch import load_file

import segkit.train.loop as loop
from segkit.cli import main as cli
from segkit.config.recipe import load_recipe
from tests.faults.conftest import log_records, on_loss_call, tiny_recipe


def plant_nan(monkeypatch, bad_steps: set[int], first_step: int = 1, interrupt_after: int | None = None) -> None:
    """Make the loss NaN at the given optimizer steps (grad_accum 1: one loss call per step), and
    optionally send this process a real SIGINT during step `interrupt_after`."""
    def act(n: int, loss):
        if n == interrupt_after:
            os.kill(os.getpid(), signal.SIGINT)
        return loss * math.nan if n in bad_steps else None

    on_loss_call(monkeypatch, act, first_step)


def finite_checkpoints(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    found = {}
    for ckpt in sorted((run / "checkpoints").glob("step-*")):
        weights = load_file(str(ckpt / "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values()), ckpt
        found[ckpt.name] = weights
    return found


RECIPE = {"max_steps": 8, "eval_every": 4, "checkpoint_every": 2, "keep_last": 10}


def test_one_bad_step_is_skipped_and_the_run_goes_on(tmp_path: Path, monkeypatch):
    plant_nan(monkeypatch, {3})
    out = tmp_path / "out"
    result = loop.train(load_recipe(tiny_recipe(tmp_path, train=RECIPE)), out)
    assert result["status"] == "done"
    records = log_records(out)
    assert [r["step"] for r in records if r.get("event") == "non_finite"] == [3]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert losses[3] is None and all(v is not None for k, v in losses.items() if k != 3)
    assert [r["bad_steps"] for r in records if "loss" in r][-1] == 1
    assert json.loads((out / "metrics.json").read_text())["bad_steps"] == 1  # the final report
    assert len(finite_checkpoints(out)) == 4


def test_bad_steps_in_a_row_stop_the_run_with_the_last_good_checkpoint(tmp_path: Path, monkeypatch, capsys):
    plant_nan(monkeypatch, set(range(5, 100)))
    recipe = tiny_recipe(tmp_path, train={**RECIPE, "max_bad_steps": 3})
    out = tmp_path / "out"
    assert cli(["train", str(recipe), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "3 optimizer steps in a row" in err and "Stopped at step 7" in err
    assert "train.lr" in err and "fp16" in err and "labels" in err
    saved = finite_checkpoints(out)
    assert sorted(saved) == ["step-0000002", "step-0000004", "step-0000006"]
    assert str(out / "checkpoints" / "step-0000006") in err
    # the skipped steps changed nothing: step 6's checkpoint holds step 4's weights
    for k in saved["step-0000004"]:
        assert torch.equal(saved["step-0000004"][k], saved["step-0000006"][k]), k
    records = log_records(out)
    assert [r["step"] for r in records if r.get("event") == "non_finite"] == [5, 6, 7]
    assert records[-1]["event"] == "stopped" and records[-1]["bad_steps"] == 3


def test_resumed_run_with_a_bad_step_matches_the_uninterrupted_one(tmp_path: Path, monkeypatch):
    train = {"max_steps": 8, "eval_every": 100, "checkpoint_every": 100, "keep_last": 10}
    recipe = load_recipe(tiny_recipe(tmp_path, train=train))
    plant_nan(monkeypatch, {3})
    assert loop.train(recipe, tmp_path / "full")["status"] == "done"

    plant_nan(monkeypatch, {3}, interrupt_after=5)  # Ctrl-C during step 5: a checkpoint of step 5
    assert loop.train(recipe, tmp_path / "cut")["status"] == "interrupted"
    plant_nan(monkeypatch, {3}, first_step=6)
    assert loop.train(recipe, tmp_path / "cut", resume=True)["status"] == "done"

    a = load_file(str(tmp_path / "full/checkpoints/step-0000008/model.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/step-0000008/model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in log_records(tmp_path / "cut") if r.get("event") == "non_finite"] == [3]
