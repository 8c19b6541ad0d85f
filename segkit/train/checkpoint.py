"""Atomic, resumable checkpoints through `accelerator.save_state`.

Each checkpoint is written into a hidden temporary folder and renamed into place only once every
file is on disk, so a crash mid-write never leaves a half checkpoint that `--resume` would pick up.
The trainer's own counters (step, epoch, position in the epoch, best score) travel in
`trainer_state.json`; model, optimizer, scheduler and every RNG state are accelerate's.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from segkit.labels import LabelSet, check_same_labels
from segkit.run_folder import RunFolder, replace_dir, write_json

STATE_FILE = "trainer_state.json"


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
    bad_steps: int = 0
    """Optimizer steps skipped because the loss or gradient norm was not finite (train/guard.py)."""
    bad_in_a_row: int = 0
    """Bad steps since the last good one; `train.max_bad_steps` of them stop the run."""
    skipped: int = 0
    """Training samples skipped as unreadable so far (RUN/skipped.csv lists them)."""
    samples_read: int = 0
    """Training samples drawn so far, skipped ones included: the base of `data.max_skipped` as a share."""
    world_size: int = 1
    """Processes that trained."""
    batch_size: int = 0
    """Images per process per forward pass (`train.batch_size`); 0 in checkpoints written before
    the layout was recorded."""
    grad_accum: int = 1
    samples_in_epoch: int = 0
    """The global position: samples of `epoch` consumed by all processes together
    (batches_in_epoch x batch_size x world_size). Resuming on another number of processes
    continues from it (`fit_to_layout`)."""
    plan: dict[str, Any] | None = None
    """A time budget's plan (train/time_budget.py `Plan`): the schedule and the budget left resume from it."""
    labels: dict[str, Any] = field(default_factory=dict)
    """A record of the label set the weights were trained for (the class selection owns it); resuming
    with another one is refused."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed; the message says why and what to do."""


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Temporary folders of an interrupted save are skipped."""
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir()
             if (step := RunFolder.checkpoint_step(p)) is not None and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator: Accelerator, final: Path, state: TrainerState) -> Path:
    """Write the full training state into `final` (`RunFolder.checkpoint(step)`); every process
    must call this."""
    tmp = final.with_name(f".tmp-{final.name}")
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            final.parent.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state.samples_in_epoch = state.batches_in_epoch * state.batch_size * state.world_size
            write_json(tmp / STATE_FILE, asdict(state))
            _fsync_dir(tmp)
            replace_dir(tmp, final)  # the atomic step: a checkpoint exists only once it is complete
    except Exception:
        # a full disk or a file-size limit (torch.save raises RuntimeError for it, safetensors its own
        # error, plain writes OSError): no half checkpoint stays behind to fill the disk more
        # (checkpoint_dirs would skip it anyway); the caller words the message
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        found = checkpoint_dirs(RunFolder(path).checkpoints) or checkpoint_dirs(path)
        if not found:
            raise CheckpointError(f"--resume {path}: not a checkpoint (no {STATE_FILE}) and holds none.")
        path = found[-1]
    return path


def load_checkpoint(accelerator: Accelerator, path: Path, labels: LabelSet) -> TrainerState:
    """Restore everything saved at `path`; refuse a checkpoint trained for another label set."""
    state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
    if state.labels:
        check_same_labels(LabelSet.from_dict(state.labels), labels, f"Checkpoint {path}")
    accelerator.load_state(str(path))
    return state


def fit_to_layout(state: TrainerState, path: Path, world_size: int, batch_size: int, grad_accum: int) -> str | None:
    """Continue a checkpoint on `world_size` processes, exactly in global samples.

    accelerate deals each process every world_size-th batch of one seeded order, so the samples
    consumed so far are a prefix of that order; the same prefix is whole batches on the new layout
    when the images per optimizer step (batch x processes x accumulation) are unchanged, and the
    steps, the schedule and the epochs then count the same. Otherwise the resume is refused with
    the settings that make it exact. Returns a line for the log when the layout changed.
    """
    if not state.batch_size:  # written before the layout was recorded: only the same layout is safe
        state.batch_size, state.world_size, state.grad_accum = batch_size, world_size, grad_accum
        return None
    if (state.world_size, state.batch_size, state.grad_accum) == (world_size, batch_size, grad_accum):
        return None
    saved = state.batch_size * state.world_size * state.grad_accum
    now = batch_size * world_size * grad_accum
    samples = state.batches_in_epoch * state.batch_size * state.world_size
    if saved != now or samples % (batch_size * world_size):
        ways = [f"`accelerate launch --num_processes {state.world_size}` and train.batch_size={state.batch_size}"]
        for accum in range(1, saved + 1):
            if saved % (world_size * accum) == 0 and samples % (saved // (world_size * accum) * world_size) == 0:
                ways.append(f"--set train.batch_size={saved // (world_size * accum)} --set train.grad_accum={accum}")
                break
        raise CheckpointError(
            f"Checkpoint {path} was trained on {state.world_size} process(es) x batch {state.batch_size} x "
            f"accumulation {state.grad_accum} = {saved} images per step; this run has {world_size} x {batch_size} x "
            f"{grad_accum} = {now}. Resuming exactly needs the same images per step: resume with "
            + " or with ".join(ways) + ".")
    note = (f"resumed on {world_size} process(es) from {state.world_size}: {samples} samples into epoch "
            f"{state.epoch}, {saved} images per step as before")
    if world_size > state.world_size:
        note += (f"; processes {state.world_size}..{world_size - 1} start from fresh random states "
                 "(data order and augmentation are seeded, dropout is not)")
    state.batches_in_epoch = samples // (batch_size * world_size)
    state.batch_size, state.world_size, state.grad_accum = batch_size, world_size, grad_accum
    return note


def prune(root: Path, keep_last: int, best: Path) -> None:
    """Keep the newest `keep_last` checkpoints and the `best` one; delete the rest."""
    found = checkpoint_dirs(root)
    keep = set(found[-keep_last:]) | {p for p in found if p.name == best.name}
    for p in found:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
