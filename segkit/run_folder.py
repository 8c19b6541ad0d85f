"""The run folder: one place that holds everything a training run produced.

    RUN/
      recipe.yaml        the resolved recipe (after --set overrides)
      class_stats.json   training pixel and image counts per class
      train_log.jsonl    one JSON object per log step and per evaluation
      checkpoints/       resumable states (atomic; last K plus the best)
      model/             the best model in the Hugging Face layout (reload with from_pretrained)
      metrics.json, per_class.md, confusion.png, overlays/   the final evaluation
      logs/              TensorBoard (or W&B) tracker files
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from segkit.report import json_default

RECIPE_FILE = "recipe.yaml"


class RunFolderError(ValueError):
    """An output folder that cannot be used as asked; the message says which flag fixes it."""


class RunFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.recipe = self.root / RECIPE_FILE
        self.log_file = self.root / "train_log.jsonl"
        self.checkpoints = self.root / "checkpoints"
        self.model = self.root / "model"
        self.overlays = self.root / "overlays"
        self.stats = self.root / "class_stats.json"
        self.tracker_dir = self.root / "logs"

    def prepare(self, resume: bool, overwrite: bool, is_main: bool) -> None:
        """Refuse to mix two runs in one folder unless the user said which one wins."""
        holds_run = self.recipe.exists() or self.checkpoints.exists()
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite contradict each other: choose one.")
        if resume:
            if not holds_run:
                raise RunFolderError(f"--resume: {self.root} holds no run to resume. Drop --resume to start one.")
            return
        if holds_run and not overwrite:
            raise RunFolderError(
                f"{self.root} already holds a run. Pass --resume to continue it, --overwrite to replace "
                "it, or choose another --output-dir."
            )
        if self.root.exists() and not holds_run and any(self.root.iterdir()):
            raise RunFolderError(
                f"{self.root} is not empty and is not a segkit run; refusing to write into it. "
                "Choose an empty or new --output-dir."
            )
        if is_main:
            if holds_run and overwrite:
                shutil.rmtree(self.root)
            self.root.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to train_log.jsonl; flushed at once so a crash loses nothing logged."""
        record = {"time": round(time.time(), 3), **record}
        with open(self.log_file, "a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")

    def write_json(self, path: Path, data: Any) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=json_default))
        tmp.replace(path)
