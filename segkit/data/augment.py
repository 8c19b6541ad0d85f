"""albumentations pipelines that move image and mask together; mean/std come from the model.

Training: random rescale -> pad (image 0, mask 255) -> random crop -> flip -> optional rotate ->
optional colour jitter -> normalise. Evaluation resizes or pads the IMAGE only: labels are never
resized for scoring; predictions are brought to the label's size instead.

Masks always use nearest-neighbour interpolation: any other mode invents label values between
neighbouring ids (STACK-NOTES measured 133 of them).

albumentations has its own RNG that global seeds do not reach, and with one fixed seed every
DataLoader worker repeats the same crops. `SegmentationDataset.reseed` reseeds the pipeline;
`worker_init_fn` calls it once per worker with that worker's torch seed.
"""

from __future__ import annotations

import os
import random
from typing import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from segkit.config import AugmentConfig  # noqa: E402
from segkit.labels import IGNORE_INDEX  # noqa: E402

PAD_DIVISOR = 32
"""`eval_mode: pad` pads images to a multiple of this: the strides of every supported encoder divide it."""


def hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`512` or `[384, 512]` -> (height, width)."""
    if isinstance(size, int):
        return size, size
    return (int(size[0]), int(size[0])) if len(size) == 1 else (int(size[0]), int(size[1]))


def build_transforms(cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float], train: bool,
                     seed: int | None = None) -> A.Compose:
    """The image+mask pipeline for training (`train=True`) or the image pipeline for evaluation.

    `mean`/`std` are the model's image processor values on the 0..1 scale (pixels are divided by
    255 first, as the processors do).
    """
    steps = _train_steps(cfg) if train else _eval_steps(cfg)
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(steps, seed=seed, mask_interpolation=cv2.INTER_NEAREST)


def _train_steps(cfg: AugmentConfig) -> list[A.BasicTransform]:
    h, w = hw(cfg.crop_size)
    low, high = cfg.scale
    steps: list[A.BasicTransform] = [
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        # 255 is ignored by the loss and the metric: padded pixels never teach a class
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
    ]
    if cfg.cat_max_ratio < 1:
        from segkit.data.balance import CatMaxRatioCrop  # written beside this module; imported only when used

        steps.append(CatMaxRatioCrop(h, w, cfg.cat_max_ratio, ignore_index=IGNORE_INDEX, max_tries=10))
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


def _eval_steps(cfg: AugmentConfig) -> list[A.BasicTransform]:
    if cfg.eval_mode == "resize":
        h, w = hw(cfg.eval_size if cfg.eval_size is not None else cfg.crop_size)
        return [A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR)]
    if cfg.eval_mode == "pad":
        # top-left, so the label (never padded) lines up with the top-left of the prediction
        return [A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=PAD_DIVISOR,
                              pad_width_divisor=PAD_DIVISOR, position="top_left",
                              border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX)]
    return []


def reseed_transform(transform: A.Compose | None, seed: int) -> None:
    """Give a pipeline a new seed; albumentations ignores numpy's and torch's global seeds."""
    if transform is not None:
        transform.set_random_seed(int(seed) % 2**31)


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
