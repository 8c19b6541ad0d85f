"""Transforms: albumentations pipelines that move image and mask together for training, and the
model's own image processor for evaluation. mean/std come from the model.

Training: random rescale -> pad (image 0, mask 255) -> random crop (optionally retried until no
class dominates it, `CatMaxRatioCrop`) -> flip -> optional rotate -> optional colour jitter, all
on uint8; normalisation with the model's mean/std follows on the device (`segkit.data.pixels`).
Evaluation (`EvalTransform`) resizes or pads the IMAGE only, exactly as the image
processor saved with the model does: labels are never resized for scoring; predictions are
brought to the label's size instead (`segkit.infer.scores`).

Masks always use nearest-neighbour interpolation: any other mode invents label values between
neighbouring ids (STACK-NOTES measured 133 of them).

albumentations has its own RNG that global seeds do not reach: `reseed_transform` gives a pipeline
its seed. Which seed, and when, is decided in one place, `segkit.data.sampling`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.augmentations.crops.transforms import BaseCrop  # noqa: E402

from segkit.config.auto import resolved  # noqa: E402
from segkit.config.sections import AugmentConfig, InputSpec, hw  # noqa: E402
from segkit.data.eval_transform import EvalTransform, eval_processor  # noqa: E402
from segkit.labels import IGNORE_INDEX  # noqa: E402

# One OpenCV thread, set before any pool starts: augmentation runs in DataLoader workers, whose
# extra threads would compete with the training's torch threads, and a forked worker that touches
# a thread pool its parent started hangs (seen: cv2.setNumThreads inside a worker never returned).
cv2.setNumThreads(1)

def build_transforms(cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float], train: bool,
                     seed: int | None = None) -> A.Compose | EvalTransform:
    """The image+mask pipeline for training (`train=True`), or the evaluation transform that a
    model with these mean/std and `cfg`'s eval settings would save (`EvalTransform`).

    `mean`/`std` are the model's image processor values on the 0..1 scale (pixels are divided by
    255 first, as the processors do). The training pipeline stops before normalising: its crops
    leave the workers as uint8 and are normalised with these values on the device
    (`segkit.data.pixels`), which is 4x less to copy per image.
    """
    if not train:
        return EvalTransform(eval_processor(InputSpec.from_augment(cfg), mean, std), cfg.eval_mode == "pad")
    return A.Compose(_train_steps(cfg), seed=seed, mask_interpolation=cv2.INTER_NEAREST)


def _train_steps(cfg: AugmentConfig) -> list[A.BasicTransform]:
    h, w = hw(cfg.crop_size)
    low, high = cfg.scale
    steps: list[A.BasicTransform] = [
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        # 255 is ignored by the loss and the metric: padded pixels never teach a class
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
    ]
    cat_max_ratio = resolved(cfg.cat_max_ratio, "augment.cat_max_ratio")
    if cat_max_ratio < 1:
        steps.append(CatMaxRatioCrop(h, w, cat_max_ratio, ignore_index=IGNORE_INDEX, max_tries=10))
    else:
        steps.append(A.RandomCrop(height=h, width=w))
    if cfg.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if cfg.rotate > 0:
        # corners uncovered by the rotation are 255 in the mask, for the same reason as padding
        steps.append(A.Rotate(limit=cfg.rotate, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX,
                              interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, p=1.0))
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 10, p=0.8))
    return steps


def reseed_transform(transform: A.Compose | None, seed: int) -> None:
    """Give a pipeline a new seed; albumentations ignores numpy's and torch's global seeds."""
    if transform is not None:
        transform.set_random_seed(int(seed) % 2**31)


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
