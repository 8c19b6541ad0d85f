"""DataLoaders: the training loader (seeded order and augmentation, or a stream) and the
evaluation loader (this process's share of a split, never padded with repeats).

Workers ignore Ctrl-C (the main process catches it and saves a checkpoint) and run their
libraries single-threaded: the main process's torch threads own the cores, and every extra thread
in a worker competes with them.

Feeding a GPU: batches are uint8 (segkit.data.pixels), pinned when the device is CUDA so that
accelerate's copies are non-blocking (train/runtime.py), prefetched `train.prefetch_factor` batches
per worker, by workers that persist across epochs and evaluations (no re-fork: the epoch reaches
them through the sampler, `EpochTagged`). `train.num_workers: auto` gives each process the cores it
has (`loader_workers`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from segkit.config.auto import resolved
from segkit.config.sections import TrainConfig
from segkit.data.dataset import DataBundle, TargetCollate, eval_collate, train_collate
from segkit.data.sampling import (
    EpochSeededItems,
    EpochShuffle,
    EpochTagged,
    RareClassSampler,
    image_weights,
    quiet_worker,
    worker_init_fn,
)


def _stream_worker(worker_id: int) -> None:
    quiet_worker(worker_id)
    worker_init_fn(worker_id)


def loader_workers(setting: int | str, local_processes: int | None = None) -> int:
    """`train.num_workers` as a count. `auto`: the cores this process may run on (its affinity,
    shared by the processes `accelerate launch` started on this machine), less one for the process
    itself, at least 1. A 32-core machine with 4 GPUs gives 7 workers per GPU."""
    if setting != "auto":
        return int(setting)
    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_processes) - 1)


def _feeding(workers: int, cfg_prefetch: int, pin: bool, persistent: bool) -> dict[str, Any]:
    """The DataLoader settings that keep a device fed; prefetch and persistence need workers."""
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin}
    if workers > 0:
        kw.update(prefetch_factor=cfg_prefetch, persistent_workers=persistent)
    return kw


def build_train_loader(data: DataBundle, cfg: TrainConfig, pin_memory: bool = False,
                       targets: Any = None) -> tuple[DataLoader, Any, Any]:
    """(loader, the object whose set_epoch reseeds augmentation, the sampler or None).

    `pin_memory`: pin batches for asynchronous copies (when the device is CUDA). `targets`: the
    model's per-image target builder run in the collate (MaskFormer's masks), or None."""
    collate = train_collate if targets is None else TargetCollate(targets)
    if isinstance(data.train, IterableDataset):
        return streamed_loader(data.train, cfg, pin_memory, collate), data.train, None
    items = EpochSeededItems(data.train, cfg.seed)
    if resolved(cfg.sampler, "train.sampler") == "rare":
        weights = image_weights(data.stats, cfg.sampler_power, background=data.labels.background)
        sampler: Any = RareClassSampler(weights, num_samples=len(items), seed=cfg.seed)
    else:
        sampler = EpochShuffle(len(items), cfg.seed)
    loader = DataLoader(
        items, batch_size=cfg.batch_size, sampler=EpochTagged(sampler), collate_fn=collate, drop_last=True,
        worker_init_fn=quiet_worker, **_feeding(loader_workers(cfg.num_workers), cfg.prefetch_factor, pin_memory, True),
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG out of data loading
    )
    if len(loader) == 0:
        raise ValueError(f"train.batch_size: {cfg.batch_size} is larger than the {len(items)} training samples.")
    return loader, items, sampler


def streamed_loader(dataset: IterableDataset, cfg: TrainConfig, pin_memory: bool = False,
                    collate: Any = train_collate) -> DataLoader:
    """A stream has no length and no random access: rows come in (shuffled-buffer) order, each
    worker reads its own shards and reseeds its augmentation. Resume replays the stream's epoch
    up to the saved position, so it needs the same shards.

    Its workers are not persistent: the epoch's shuffle is set on the stream itself, which only
    freshly forked workers see (and a stream usually runs on a step budget, rarely to an epoch's end)."""
    if not cfg.max_steps:
        raise ValueError("train.max_steps: a streamed dataset has no length to count epochs in; set a step budget.")
    if resolved(cfg.sampler, "train.sampler") != "uniform":
        raise ValueError("train.sampler: a streamed dataset cannot be resampled; use `uniform`.")
    return DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=collate, drop_last=True,
                      worker_init_fn=_stream_worker,
                      **_feeding(loader_workers(cfg.num_workers), cfg.prefetch_factor, pin_memory, False))


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int | str, process_index: int = 0,
                num_processes: int = 1, pin_memory: bool = False, persistent: bool = False) -> DataLoader:
    """This process's interleaved share of `dataset`, in order.

    Deliberately not `accelerator.prepare`d: accelerate pads uneven shards by repeating samples,
    and repeated samples would be counted twice in the summed confusion matrix. `persistent`: for
    the trainer's val loader, read at every evaluation (its items have no epoch to miss).
    """
    share = Subset(dataset, range(process_index, len(dataset), num_processes))
    return DataLoader(share, batch_size=batch_size, shuffle=False, collate_fn=eval_collate, worker_init_fn=quiet_worker,
                      **_feeding(loader_workers(num_workers), 2, pin_memory, persistent))
