"""DataLoaders: the training loader (seeded order and augmentation, or a stream) and the
evaluation loader (this process's share of a split, never padded with repeats).

Workers ignore Ctrl-C (the main process catches it and saves a checkpoint) and run their
libraries single-threaded: the main process's torch threads own the cores, and every extra thread
in a worker competes with them.
"""

from __future__ import annotations

import signal
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from segkit.config.recipe import TrainConfig
from segkit.config.auto import resolved
from segkit.data.dataset import DataBundle, eval_collate, train_collate
from segkit.data.sampling import EpochSeededItems, EpochShuffle, RareClassSampler, image_weights, worker_init_fn


def quiet_worker(_: int) -> None:
    """Workers ignore Ctrl-C: the main process catches it and saves a checkpoint instead. (torch
    runs its workers single-threaded itself; OpenCV is set to one thread at import, augment.py.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stream_worker(worker_id: int) -> None:
    quiet_worker(worker_id)
    worker_init_fn(worker_id)


def build_train_loader(data: DataBundle, cfg: TrainConfig) -> tuple[DataLoader, Any, Any]:
    """(loader, the object whose set_epoch reseeds augmentation, the sampler or None)."""
    if isinstance(data.train, IterableDataset):
        return streamed_loader(data.train, cfg), data.train, None
    items = EpochSeededItems(data.train, cfg.seed)
    if resolved(cfg.sampler, "train.sampler") == "rare":
        weights = image_weights(data.stats, cfg.sampler_power, background=data.labels.background)
        sampler: Any = RareClassSampler(weights, num_samples=len(items), seed=cfg.seed)
    else:
        sampler = EpochShuffle(len(items), cfg.seed)
    loader = DataLoader(
        items, batch_size=cfg.batch_size, sampler=sampler, collate_fn=train_collate, drop_last=True,
        num_workers=cfg.num_workers, worker_init_fn=quiet_worker, persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG out of data loading
    )
    if len(loader) == 0:
        raise ValueError(f"train.batch_size: {cfg.batch_size} is larger than the {len(items)} training samples.")
    return loader, items, sampler


def streamed_loader(dataset: IterableDataset, cfg: TrainConfig) -> DataLoader:
    """A stream has no length and no random access: rows come in (shuffled-buffer) order, each
    worker reads its own shards and reseeds its augmentation. Resume replays the stream's epoch
    up to the saved position, so it needs the same shards."""
    if not cfg.max_steps:
        raise ValueError("train.max_steps: a streamed dataset has no length to count epochs in; set a step budget.")
    if resolved(cfg.sampler, "train.sampler") != "uniform":
        raise ValueError("train.sampler: a streamed dataset cannot be resampled; use `uniform`.")
    return DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=train_collate, drop_last=True,
                      num_workers=cfg.num_workers, worker_init_fn=_stream_worker)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, process_index: int = 0,
                num_processes: int = 1) -> DataLoader:
    """This process's interleaved share of `dataset`, in order.

    Deliberately not `accelerator.prepare`d: accelerate pads uneven shards by repeating samples,
    and repeated samples would be counted twice in the summed confusion matrix.
    """
    share = Subset(dataset, range(process_index, len(dataset), num_processes))
    return DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=eval_collate,
                      worker_init_fn=quiet_worker)
