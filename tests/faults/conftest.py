"""Shared pieces of the fault-injection suite: a tiny recipe and a reader of train_log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

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
