"""Data order and augmentation that depend only on (seed, epoch, index).

That is what makes a resumed run bit-identical to an uninterrupted one, whatever the number of
DataLoader workers: a worker's RNG never decides which crop a sample gets, and the shuffle of
epoch e is the same permutation every time it is drawn.
"""

from __future__ import annotations

import signal
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochShuffle(Sampler[int]):
    """A fresh permutation per epoch, drawn from its own generator seeded with (seed, epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class EpochSeededItems(Dataset):
    """Reseeds the wrapped dataset's augmentation for every item from (seed, epoch, index).

    Also fixes albumentations' worker problem: with one fixed seed, every DataLoader worker would
    otherwise repeat the same crops.
    """

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # read by workers: they get a fresh copy of this object each epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.dataset.reseed((self.seed * 1_000_003 + self.epoch * 7_919 + index * 104_729) % 2**31)
        return self.dataset[index]


def quiet_worker(_: int) -> None:
    """Workers ignore Ctrl-C: the main process catches it and saves a checkpoint instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
