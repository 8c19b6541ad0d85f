"""Show rare classes more often: a weighted image sampler and a crop that avoids one-class crops.

Two tools that act on the data instead of the loss (see `segkit.losses` for that side):

- `image_weights` + `RareClassSampler` (`train.sampler: rare`): draw images that contain rare
  classes more often. Use when a class appears in only a few images, so that uniform epochs show it
  too rarely for the model to learn it, whatever the loss.
- `CatMaxRatioCrop` (`augment.cat_max_ratio`, e.g. 0.75): retry a random crop until no class fills
  more than that share of it. Use when crops are small against the image and most land on
  background (road, sky, wall) alone.
"""

from __future__ import annotations

from typing import Any, Iterator, Literal, Protocol

import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop

from segkit.labels import IGNORE_INDEX


class ClassCounts(Protocol):
    """The part of `segkit.data.stats.ClassStats` that the sampler weights need."""

    pixel_counts: np.ndarray  # (C,) labelled pixels per training id
    image_counts: np.ndarray  # (C,) train images that contain each class
    num_images: int
    presence: np.ndarray  # (N, C) bool: classes that each train sample contains


# ----------------------------------------------------------------------------- sampling


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


def _epoch_seed(seed: int, epoch: int) -> int:
    """One 63-bit seed from (seed, epoch); SeedSequence mixes them so nearby pairs don't collide."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


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
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return iter(draws.tolist())

    def __len__(self) -> int:
        return self.num_samples


# ----------------------------------------------------------------------------- cropping


class CatMaxRatioCrop(BaseCrop):
    """Random crop of (height, width), retried until no class covers more than `cat_max_ratio` of it.

    The share counts labelled pixels only (`ignore_index` is left out), and a crop with no labelled
    pixel is retried too. After `max_tries` crops that all fail, the last one is used. With
    `cat_max_ratio=1` (or no mask in the call) it is a plain random crop. Positions come from the
    transform's own RNG, so `A.Compose(..., seed=N)` repeats them.

    The image must be at least the crop size: pad first (`A.PadIfNeeded(..., fill_mask=255)`, as
    255 is ignored by the loss and the metric). When to use: `augment.cat_max_ratio: 0.75` when
    training crops are small against the images and many of them hold background only.
    """

    def __init__(
        self,
        height: int,
        width: int,
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        max_tries: int = 10,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        if height < 1 or width < 1:
            raise ValueError(f"CatMaxRatioCrop: crop size must be >= 1; got {height}x{width}")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"augment.cat_max_ratio: a share in (0, 1]; got {cat_max_ratio}")
        if max_tries < 1:
            raise ValueError(f"CatMaxRatioCrop: max_tries must be >= 1; got {max_tries}")
        self.height = height
        self.width = width
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image_height, image_width = params["shape"][:2]
        if image_height < self.height or image_width < self.width:
            raise ValueError(
                f"CatMaxRatioCrop: crop {self.height}x{self.width} is larger than the image "
                f"{image_height}x{image_width}. Pad first: A.PadIfNeeded({self.height}, {self.width}, "
                f"fill_mask={self.ignore_index})."
            )
        labels = _label_plane(data.get("mask"))
        tries = self.max_tries if labels is not None and self.cat_max_ratio < 1 else 1
        for _ in range(tries):
            y = self.py_random.randint(0, image_height - self.height)
            x = self.py_random.randint(0, image_width - self.width)
            if tries == 1 or self._balanced(labels[y : y + self.height, x : x + self.width]):
                break
        return {"crop_coords": (x, y, x + self.width, y + self.height)}

    def _balanced(self, crop: np.ndarray) -> bool:
        counts = np.bincount(crop.ravel())
        if self.ignore_index < counts.size:
            counts[self.ignore_index] = 0
        total = counts.sum()
        return bool(total > 0 and counts.max() <= self.cat_max_ratio * total)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


def _label_plane(mask: np.ndarray | None) -> np.ndarray | None:
    """The (H, W) label map of a mask given as (H, W) or (H, W, 1), as non-negative integers."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if not np.issubdtype(mask.dtype, np.integer):
        mask = mask.astype(np.int64)
    return mask


__all__ = ["CatMaxRatioCrop", "RareClassSampler", "image_weights"]
