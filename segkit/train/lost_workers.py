"""A DataLoader worker killed by a signal, in words.

The kernel's OOM killer ends a worker with SIGKILL, and torch then raises "DataLoader worker (pid
N) is killed by signal: Killed." or "... exited unexpectedly", with a traceback that says nothing of
memory. Each worker holds its own copy of the dataset object, decoded images and a prefetch of
batches, so fewer workers or smaller batches is the usual fix.
"""

from __future__ import annotations


def worker_was_killed(error: BaseException) -> bool:
    text = str(error)
    return "DataLoader worker" in text and ("killed by signal" in text or "exited unexpectedly" in text)


def lost_worker_message(error: BaseException, step: int, saved: str | None, num_workers: int,
                        batch_size: int) -> str:
    first = str(error).strip().splitlines()[0]
    kept = f"A resumable checkpoint of step {step} is in {saved}." if saved else "No checkpoint could be saved."
    return (f"A data-loading worker was killed at step {step} ({first}). The likely cause is memory: the "
            f"kernel's OOM killer ends the largest process. Lower train.num_workers (now {num_workers}) or "
            f"train.batch_size (now {batch_size}), then continue with --resume. {kept}")
