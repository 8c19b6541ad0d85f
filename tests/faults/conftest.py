"""Shared pieces of the fault-injection suite: a tiny recipe and a reader of train_log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import yaml

from segkit.train import loop
from tests.test_train import TINY


def tiny_recipe(tmp_path: Path, name: str = "recipe.yaml", **sections) -> Path:
    """The trainer tests' tiny SegFormer on generated shapes; 6 optimizer steps per epoch."""
    values = json.loads(json.dumps(TINY))
    values["train"].update({"tracker": "none", "num_overlays": 0, "warmup_steps": 0})
    for section, changes in sections.items():
        values.setdefault(section, {}).update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def on_loss_call(monkeypatch, act: Callable[[int, Any], Any], first: int = 1) -> None:
    """Run `act(n, loss)` on the n-th loss the trainer computes (n counts from `first`; with
    grad_accum 1, one per optimizer step). What it returns replaces the loss; None keeps it. The
    fault is planted in the real loss module by a forward hook: the code under test is not mocked."""
    build, calls = loop.build_loss, {"n": first - 1}

    def planted(*args, **kwargs):
        criterion = build(*args, **kwargs)

        def hook(module, inputs, loss):
            calls["n"] += 1
            out = act(calls["n"], loss)
            return loss if out is None else out

        criterion.register_forward_hook(hook)
        return criterion

    monkeypatch.setattr(loop, "build_loss", planted)
