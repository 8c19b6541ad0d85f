"""The run folder's layout, and the one way segkit writes files: atomically.

    RUN/
      recipe.yaml        the resolved recipe (after --set overrides)
      class_stats.json   training pixel and image counts per class
      train_log.jsonl    one JSON object per log step and per evaluation
      checkpoints/       resumable states (atomic; last K plus the best)
      model/             the best model in the Hugging Face layout (reload with from_pretrained)
      metrics.json, per_class.md, confusion.png, overlays/   the final evaluation (a `Report`)
      per_image.csv, worst/, report.html   its per-image scores, the worst images per class, and
                         the self-contained HTML report (`segkit report RUN` rebuilds it)
      start.json         the step-0 evaluation, when the head was carried over from a checkpoint
      logs/              TensorBoard (or W&B) tracker files
      export/            `segkit export`: the model with a model card, ready to push
      eval-SPLIT/        `segkit evaluate`: another `Report`

Every other module asks this one for paths. It imports nothing from segkit, so anything may use it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable


def json_default(obj: Any) -> Any:
    """numpy scalars and arrays, torch tensors and paths: what reports and run logs hold."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` beside `path`, then rename over it: a crash never leaves half a file.

    Same folder, so `os.replace` is a rename. Not mkstemp, whose 0600 mode would stick to the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    # allow_nan=False: a NaN here is a bug upstream (undefined metrics are None), not a value.
    text = json.dumps(data, indent=indent, allow_nan=False, default=json_default) + "\n"
    write_text(path, text)


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a completely written folder into place. Until the rename, readers see the old one (or
    none), never a half-written one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def temp_dir_for(final: Path) -> Path:
    """An empty hidden folder beside `final`, to be filled and then passed to `replace_dir`."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


_CHECKPOINT = re.compile(r"^step-(\d+)$")


class Report:
    """The files of one evaluation report, in the run folder or in `segkit evaluate`'s folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.metrics = self.root / "metrics.json"
        self.per_class = self.root / "per_class.md"
        self.confusion = self.root / "confusion.png"
        self.overlays = self.root / "overlays"
        self.per_image = self.root / "per_image.csv"
        self.worst = self.root / "worst"
        self.html = self.root / "report.html"

    def worst_panel(self, index: int) -> Path:
        """image | truth | prediction of image `index`, one of the worst for some class."""
        return self.worst / f"{index:05d}.png"

    def run(self) -> "RunFolder | None":
        """The training run this report belongs to: its own folder, or the parent of eval-SPLIT/."""
        for root in (self.root, self.root.parent):
            if RunFolder(root).recipe.is_file():
                return RunFolder(root)
        return None


class RunFolder(Report):
    """Paths of a training run; `prepare` decides whether the folder may be written."""

    def __init__(self, root: str | Path):
        super().__init__(root)
        self.recipe = self.root / "recipe.yaml"
        self.stats = self.root / "class_stats.json"
        self.log_file = self.root / "train_log.jsonl"
        self.start = self.root / "start.json"
        self.checkpoints = self.root / "checkpoints"
        self.model = self.root / "model"
        self.tracker_dir = self.root / "logs"
        self.export = self.root / "export"

    def eval_report(self, split: str) -> Report:
        return Report(self.root / f"eval-{split}")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    @staticmethod
    def checkpoint_step(path: Path) -> int | None:
        """The step a checkpoint folder holds, from its name; None for anything else (such as the
        hidden temporary folder of a save in progress)."""
        match = _CHECKPOINT.match(path.name)
        return int(match.group(1)) if match else None

    @staticmethod
    def model_dir(path: str | Path) -> Path:
        """A run folder stands for the model/ inside it; any other folder is taken as a model."""
        path = Path(path)
        inner = RunFolder(path).model
        return inner if (inner / "config.json").is_file() else path

    def is_run(self) -> bool:
        return self.recipe.exists() or self.checkpoints.exists()

    def prepare(self, resume: bool, overwrite: bool, is_main: bool) -> None:
        """Refuse to mix two runs in one folder unless the user said which one wins."""
        holds_run = self.is_run()
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
        """Append one line to train_log.jsonl; flushed at once so a crash loses nothing logged.

        Appending a line is the one write that is not atomic: a crash can cut only the last line.
        """
        record = {"time": round(time.time(), 3), **record}
        with open(self.log_file, "a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")


class RunFolderError(ValueError):
    """An output folder that cannot be used as asked; the message says which flag fixes it."""
