"""Atomic, resumable checkpoints through `accelerator.save_state`.

Each checkpoint is written into a hidden temporary folder and renamed into place only once every
file is on disk, so a crash mid-write never leaves a half checkpoint that `--resume` would pick up.
The trainer's own counters (step, epoch, position in the epoch, best score) travel in
`trainer_state.json`; model, optimizer, scheduler and every RNG state are accelerate's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from segkit.labels import LabelSet

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    """Counters that, with accelerate's saved state, let a run continue exactly where it stopped."""

    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    """Current epoch (0-based)."""
    batches_in_epoch: int = 0
    """Batches of `epoch` already consumed; resume skips them in the same seeded order."""
    best_miou: float = -1.0
    best_step: int = -1
    evals_since_best: int = 0
    last_eval_step: int = -1
    labels: dict[str, Any] = field(default_factory=dict)
    """The label set the weights were trained for; resuming with another one is refused."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed; the message says why and what to do."""


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Temporary folders of an interrupted save are skipped."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator: Accelerator, root: Path, state: TrainerState) -> Path:
    """Write the full training state for `state.step`; every process must call this."""
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # the atomic step: a checkpoint exists only once it is complete
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def resolve_resume(resume: str | bool | None, root: Path) -> Path | None:
    """`--resume` alone means the latest checkpoint of this run; `--resume PATH` names one."""
    if not resume:
        return None
    if resume is True or resume == "latest":
        found = checkpoint_dirs(root)
        if not found:
            raise CheckpointError(f"--resume: no complete checkpoint under {root}. Start without --resume.")
        return found[-1]
    path = Path(str(resume))
    if not (path / STATE_FILE).is_file():
        found = checkpoint_dirs(path / "checkpoints") or checkpoint_dirs(path)
        if not found:
            raise CheckpointError(f"--resume {path}: not a checkpoint (no {STATE_FILE}) and holds none.")
        path = found[-1]
    return path


def load_checkpoint(accelerator: Accelerator, path: Path, labels: LabelSet) -> TrainerState:
    """Restore everything saved at `path`; refuse a checkpoint trained for another label set."""
    state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
    saved = LabelSet.from_dict(state.labels) if state.labels else None
    if saved is not None and saved.names != labels.names:
        raise CheckpointError(
            f"Checkpoint {path} was trained for classes {list(saved.names)}, but this recipe selects "
            f"{list(labels.names)}. Resume with the recipe it was trained with, or start a new run."
        )
    accelerator.load_state(str(path))
    return state


def prune(root: Path, keep_last: int, best_step: int) -> None:
    """Keep the newest `keep_last` checkpoints and the best one; delete the rest."""
    found = checkpoint_dirs(root)
    keep = set(found[-keep_last:]) | {p for p in found if p.name == f"step-{best_step:07d}"}
    for p in found:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
