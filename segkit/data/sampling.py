"""Which training images a step sees, in which order, with which augmentation: a function of
(seed, epoch, index) only.

That makes a resumed run bit-identical to an uninterrupted one whatever the number of DataLoader
workers: a worker's RNG never decides which crop a sample gets, and the order of epoch e is the same
every time it is drawn. Every draw here seeds itself with `mix_seed`.

- `EpochShuffle`: a fresh permutation per epoch (`train.sampler: uniform`).
- `image_weights` + `RareClassSampler` (`train.sampler: rare`): draw images that contain rare
  classes more often. Use when a class appears in only a few images, so that uniform epochs show it
  too rarely for the model to learn it, whatever the loss.
- `EpochTagged` + `EpochSeededItems`: the epoch travels with every index (persistent workers
  never see a `set_epoch`), and each item's augmentation is reseeded from it.
- `worker_init_fn`: a stream has no item index, so each worker reseeds once from its torch seed.
"""

from __future__ import annotations

import random
import signal
from typing import Any, Iterator, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers; SeedSequence mixes them so that nearby tuples
    ((seed, epoch) and (seed, epoch + 1), ...) give unrelated streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class ClassCounts(Protocol):
    """The part of `segkit.data.stats.ClassStats` that the sampler weights need."""

    pixel_counts: np.ndarray  # (C,) labelled pixels per training id
    image_counts: np.ndarray  # (C,) train images that contain each class
    num_images: int
    presence: np.ndarray  # (N, C) bool: classes that each train sample contains


def image_weights(
    stats: ClassCounts,
    power: float = 0.5,
    background: int | None = None,
    frequency: Literal["images", "pixels"] = "images",
) -> np.ndarray:
    """Sampling probability per train image (N,), summing to 1: images with rare classes come first.

    Each class gets a rarity r_c = (1 / f_c) ** power, where f_c is by default the share of train
    images that contain c (`frequency="images"`), or its share of labelled pixels (`"pixels"`).
    An image's weight is max(1, max of r_c over the classes it contains, `background` left out).
    Since f_c <= 1, r_c >= 1: an image with no rare class keeps the base weight 1, the minimum.

    Image frequency is the default because sampling can only change how often an image is seen: a
    class in 2% of the images gains from it, while a class in 90% of the images can't, however small
    its pixels are (that is the loss's job: `loss.class_weights`). `power` sets the strength:
    0 is uniform, 0.5 (the square root, as in LVIS repeat-factor sampling) is moderate, 1 draws a
    class's images in inverse proportion to how common they are. Large powers repeat the few images
    of the rarest class so often that the model may memorise them.
    """
    if power < 0:
        raise ValueError(f"train.sampler_power: must be >= 0; got {power}")
    if frequency not in ("images", "pixels"):
        raise ValueError(f"image_weights: frequency must be 'images' or 'pixels'; got {frequency!r}")
    presence = np.asarray(stats.presence, dtype=bool)
    counts = np.asarray(stats.image_counts if frequency == "images" else stats.pixel_counts, dtype=np.float64)
    if presence.ndim != 2 or presence.shape[1] != counts.size:
        raise ValueError(
            f"class statistics: presence has shape {presence.shape}, expected (num_images, {counts.size}). "
            "Recompute the statistics of the train split."
        )
    total = float(stats.num_images) if frequency == "images" else counts.sum()
    freq = counts / max(total, 1.0)
    rarity = np.ones_like(freq)  # a class never seen can't be in any image; 1 keeps the max well-defined
    seen = freq > 0
    rarity[seen] = (1.0 / freq[seen]) ** power
    if background is not None:
        if not 0 <= background < rarity.size:
            raise ValueError(f"image_weights: background={background} is not a class id (0..{rarity.size - 1})")
        rarity[background] = 1.0
    # (N, C) -> (N,): rarest class in each image; 1 for images with none present (all 255).
    weights = np.where(presence, rarity[None, :], 1.0).max(axis=1, initial=1.0)
    return weights / weights.sum()


class EpochShuffle(Sampler[int]):
    """A fresh permutation per epoch, drawn from its own generator seeded with (seed, epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class RareClassSampler(torch.utils.data.Sampler[int]):
    """Draw `num_samples` image indices per epoch with replacement, with probability `weights`.

    The draw depends only on (seed, epoch), so a resumed run repeats the order of the interrupted
    epoch, and every process of a distributed run draws the same stream (accelerate then hands each
    process its share of the batches). accelerate calls `set_epoch` at the start of each epoch; a
    hand-written loop must call it too, or every epoch draws the same order.
    """

    def __init__(self, weights: np.ndarray, num_samples: int | None = None, seed: int = 0):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"RareClassSampler: weights must be a non-empty 1-D array; got shape {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("RareClassSampler: weights must be finite, >= 0, and not all 0")
        self.weights = torch.from_numpy(weights)
        self.num_samples = weights.size if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"RareClassSampler: num_samples must be >= 1; got {num_samples}")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return iter(draws.tolist())

    def __len__(self) -> int:
        return self.num_samples


class EpochTagged(Sampler[tuple[int, int]]):
    """Yields (epoch, index) for the wrapped sampler's indices: the epoch travels with each index.

    Persistent DataLoader workers keep the copy of the dataset they were forked with, so a
    `set_epoch` on the main process's items never reaches them; the sampler runs on the main
    process, so what it yields does. `EpochSeededItems` reads the epoch from the key.
    """

    def __init__(self, sampler: Any):
        self.sampler = sampler

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class EpochSeededItems(Dataset):
    """Reseeds the wrapped dataset's augmentation for every item from (seed, epoch, index).

    Also fixes albumentations' worker problem: with one fixed seed, every DataLoader worker would
    otherwise repeat the same crops. Keys are `(epoch, index)` from `EpochTagged` (what persistent
    workers need), or a plain index, read with the epoch of the last `set_epoch`.
    """

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # for plain-index keys only: persistent workers never see this copy

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        self.dataset.reseed(mix_seed(self.seed, epoch, index) % 2**31)
        return self.dataset[index]


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: a different augmentation stream per worker (and per epoch).

    torch gives each worker its own `initial_seed()` (base seed + worker id, with a fresh base seed
    every epoch); that seed is passed to the dataset's `reseed`, found by unwrapping `.dataset`
    attributes (Subset and similar wrappers).
    """
    seed = torch.initial_seed() % 2**31
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    while dataset is not None and not hasattr(dataset, "reseed"):
        dataset = getattr(dataset, "dataset", None)
    if dataset is not None:
        dataset.reseed(seed)


def quiet_worker(_: int) -> None:
    """Workers ignore Ctrl-C: the main process catches it and saves a checkpoint instead. (torch
    runs its workers single-threaded itself; OpenCV is set to one thread at import, augment.py.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
