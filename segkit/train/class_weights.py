"""Per-class loss weights from the training split's pixel counts (`loss.class_weights`): the
rarer a class, the more each of its pixels counts, capped so that a few pixels never outweigh
whole images."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from segkit.config.sections import CLASS_WEIGHT_KINDS

MAX_WEIGHT_RATIO = 50.0
"""Cap on (largest class weight) / (smallest class weight). Inverse frequency on CamVid gives ratios
near 1000, and weights that far apart make training noisy: a few pixels of a rare class then move the
model more than a whole image of background."""


class PixelCounts(Protocol):
    """The part of `segkit.data.stats.ClassStats` that the weights need."""

    pixel_counts: np.ndarray  # (C,) labelled pixels per training id, 255 excluded


def class_weights(
    kind: str | Sequence[float] | None, stats: PixelCounts | None, num_classes: int
) -> torch.Tensor | None:
    """Per-class loss weights (C,) float32, or None for unweighted.

    With f_c = pixels of class c / all labelled pixels of the training split:

    - `inverse`: w_c ∝ 1 / f_c. The strongest correction; use when small classes stay at IoU 0.
    - `sqrt_inverse`: w_c ∝ 1 / sqrt(f_c). Milder; a good first try on imbalanced class subsets.
    - `enet`: w_c = 1 / ln(1.02 + f_c) (ENet, Paszke et al. 2016). Bounded by 1/ln(1.02) ≈ 50.5,
      so it saturates for rare classes instead of exploding.
    - a list: taken as given, one number per class in training-id order. Use to hand-tune.

    Computed weights are clamped so that max/min <= `MAX_WEIGHT_RATIO` (the largest ones are cut
    down), then scaled so that the pixel-frequency-weighted mean sum_c f_c w_c is 1: an average pixel
    keeps weight 1. The weighted losses here divide by the summed weights of their pixels, so the
    scale never changes the loss value; it only makes the logged weights read as "times an average
    pixel". A class with no training pixels can't occur in a training target, so its weight has no
    effect; it gets the largest weight so that it reads as the rarest class.
    """
    if kind is None:
        return None
    if not isinstance(kind, str):
        return _given_weights(kind, num_classes)
    if kind not in CLASS_WEIGHT_KINDS:
        raise ValueError(
            f"loss.class_weights: '{kind}' is unknown. Use one of {', '.join(CLASS_WEIGHT_KINDS)}, "
            "a list of numbers (one per class), or null."
        )
    freq = _pixel_frequencies(stats, num_classes, kind)
    seen = freq > 0
    raw = np.zeros(num_classes, dtype=np.float64)
    if kind == "inverse":
        raw[seen] = 1.0 / freq[seen]
    elif kind == "sqrt_inverse":
        raw[seen] = 1.0 / np.sqrt(freq[seen])
    else:  # enet
        raw[seen] = 1.0 / np.log(1.02 + freq[seen])
    raw[seen] = np.minimum(raw[seen], raw[seen].min() * MAX_WEIGHT_RATIO)
    weights = raw / np.sum(freq * raw)
    weights[~seen] = weights[seen].max()
    return torch.tensor(weights, dtype=torch.float32)


def _given_weights(values: Sequence[float], num_classes: int) -> torch.Tensor:
    values = list(values)
    if len(values) != num_classes:
        raise ValueError(
            f"loss.class_weights: got {len(values)} weights for {num_classes} classes. "
            "Give one number per class, in training-id order (background included)."
        )
    weights = torch.tensor([float(v) for v in values], dtype=torch.float32)
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"loss.class_weights: weights must be finite, >= 0, and not all 0; got {values}")
    return weights


def _pixel_frequencies(stats: PixelCounts | None, num_classes: int, kind: str) -> np.ndarray:
    if stats is None:
        raise ValueError(
            f"loss.class_weights: '{kind}' is computed from training pixel counts, but no class "
            "statistics were given. Pass the train split's ClassStats, or give a list of weights."
        )
    counts = np.asarray(stats.pixel_counts, dtype=np.float64)
    if counts.shape != (num_classes,):
        raise ValueError(
            f"loss.class_weights: class statistics cover {counts.size} classes, the model has "
            f"{num_classes}. Recompute the statistics after class selection."
        )
    total = counts.sum()
    if total <= 0:
        raise ValueError(
            "loss.class_weights: the training split has no labelled pixels (all 255?). "
            "Check the class selection; `segkit inspect` shows the per-class pixel counts."
        )
    return counts / total


# ----------------------------------------------------------------------------- losses
