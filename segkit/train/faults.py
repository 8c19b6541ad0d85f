"""What the loop does when a run goes wrong: non-finite steps read from the guard (train/guard.py),
unreadable samples listed in RUN/skipped.csv (and stood in for under several processes), a
DataLoader worker killed under it."""

from __future__ import annotations

import logging
from typing import Any

from accelerate.utils import gather_object
from torch.utils.data import IterableDataset
from tqdm.auto import tqdm

from segkit.data.errors import DataError
from segkit.train.checkpoint import checkpoint_dirs
from segkit.train.guard import RunStopped, StepGuard, halt_message
from segkit.train.lost_workers import lost_worker_message
from segkit.train.saving import write_checkpoint
from segkit.train.trainer import Trainer

log = logging.getLogger("segkit")


def step_guard(t: Trainer) -> StepGuard:
    if t.guard is None:
        t.guard = StepGuard(t.cfg.max_bad_steps, total=t.state.bad_steps, in_a_row=t.state.bad_in_a_row,
                            check_grad_norm=t.accelerator.mixed_precision != "fp16")
    return t.guard


def check_bad_steps(t: Trainer) -> None:
    """Read the guard's verdicts (where the loop syncs anyway), log each bad step, and stop after
    `train.max_bad_steps` in a row. Nothing is saved then: the skipped steps left the weights as
    the last good step made them, and the last checkpoint holds those."""
    guard, s = step_guard(t), t.state
    bad = guard.drain()
    s.bad_steps, s.bad_in_a_row = guard.total, guard.in_a_row
    if t.accelerator.is_main_process:
        for step in bad:
            t.run.log({"step": step, "event": "non_finite", "bad_steps": guard.total})
            tqdm.write(f"step {step}: non-finite loss or gradient norm; optimizer step skipped "
                       f"({guard.total} so far)")
    if guard.exhausted:
        found = checkpoint_dirs(t.run.checkpoints)
        message = halt_message(s.step, guard.in_a_row, str(found[-1]) if found else None)
        if t.accelerator.is_main_process:
            t.run.log({"step": s.step, "event": "stopped", "reason": "non_finite", "bad_steps": guard.total})
        raise RunStopped(message)


def note_skips(t: Trainer, batch: dict[str, Any]) -> None:
    """List the batch's unreadable samples in RUN/skipped.csv; stop past `data.max_skipped`.

    One process lists and checks them as it meets them. Several processes each meet their own
    share, so they hold them until the next evaluation or checkpoint, where `sync_skips` gathers
    them: the main process lists every one, and every process takes the same verdict on the
    limit (one stopping alone would leave the others waiting in the gradients' all-reduce)."""
    s, skipped = t.state, batch.get("skipped") or []
    images = len(batch["pixel_values"]) if "pixel_values" in batch else 0
    if t.accelerator.num_processes > 1:
        t.skips.hold([(s.step + 1, s.epoch, index, reason) for index, reason in skipped], images)
        return
    s.samples_read += len(skipped) + images
    if not skipped:
        return
    s.skipped += len(skipped)
    for index, reason in skipped:
        t.skips.add(s.step + 1, s.epoch, index, reason)
        tqdm.write(f"step {s.step + 1}: skipped training sample {index}: {reason}")
    t.skips.check(s.skipped, s.samples_read)


def sync_skips(t: Trainer) -> None:
    """Several processes: gather the skips each one held since the last call (a collective, so
    every process calls it, at each evaluation and checkpoint), list them, check the limit."""
    if t.accelerator.num_processes == 1:
        return
    s = t.state
    held = gather_object([t.skips.release()])  # [(rows, images read)], one per process
    # a stream's batches are read by the main process and dispatched by accelerate, and every
    # process receives the main one's list of skips with its share of the images
    rows = held[0][0] if isinstance(t.data.train, IterableDataset) else sorted(r for p in held for r in p[0])
    s.skipped += len(rows)
    s.samples_read += len(rows) + sum(images for _, images in held)
    if t.accelerator.is_main_process:
        for step, epoch, index, reason in rows:
            t.skips.add(step, epoch, index, reason)
            tqdm.write(f"step {step}: skipped training sample {index}: {reason}")
    t.accelerator.wait_for_everyone()  # the list is on disk before any process quotes it
    t.skips.check(s.skipped, s.samples_read)


def batch_to_step_on(t: Trainer, batch: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
    """The batch to step on and its loss weight; (None, 0) for one process when every sample of
    `batch` was unreadable (it skips the step). Under several processes the others are in this
    step's all-reduce, so this one takes part on its last readable batch at weight 0: the step
    then averages their gradients with a zero, as if it had read a batch of nothing."""
    several = t.accelerator.num_processes > 1
    if "pixel_values" in batch:
        if several:
            t.last_batch = batch
        return batch, 1.0
    if not several:
        return None, 0.0
    if t.last_batch is None:
        reasons = "; ".join(reason for _, reason in batch.get("skipped") or [])
        raise DataError(f"The first training batch of process {t.accelerator.process_index} holds no readable "
                        f"sample ({reasons}), so it has nothing to take part in the step with. Run `segkit "
                        f"inspect` on the training split and fix or remove the files it lists.")
    return t.last_batch, 0.0


def lost_worker(t: Trainer, error: BaseException, at_step: int) -> str:
    """A worker was killed: save the last optimizer step's position (its batches are read again
    on resume) and say what probably happened."""
    s = t.state
    s.batches_in_epoch = at_step
    final, saved = t.run.checkpoint(s.step), None
    try:
        if not final.is_dir():
            write_checkpoint(t)
        saved = str(final)
    except RunStopped as e:
        log.error("%s", e)
    if t.accelerator.is_main_process:
        t.run.log({"step": s.step, "event": "stopped", "reason": "worker_lost"})
    return lost_worker_message(error, s.step, saved, t.loader.num_workers, t.cfg.batch_size)
