"""Sliding-window inference for images far larger than the model's training crops.

A model fed at the image's own scale (`eval_mode` none or pad) takes an image whole unless it
holds more than `SLIDE_AREA` training crops' worth of pixels; then windows of the crop's size step
over it with overlap, and where they overlap their scores are blended with weights that fall
towards each window's edge (a pixel near a window's border sees little context). Evaluation and
`segkit predict` apply the same rule (`Windows`, applied by `segkit.infer.segment`), so the
reported figures are what predict gives.

Memory stays bounded: scores are kept for one band of windows at a time (C x window height x
image width), and each band's finished rows go straight to the mask. On an image that fits in one
window, this is exactly whole-image inference.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from segkit.config.sections import InputSpec
from segkit.data.eval_transform import EvalTransform
from segkit.infer.scores import batch_scores

SLIDE_AREA = 4
"""Images with more than this many training crops' worth of pixels go through sliding windows (a
model trained on 256 px crops still takes a 480x360 frame whole)."""


def slides(spec: InputSpec, height: int, width: int, window: tuple[int, int] | None = None) -> bool:
    """Whether an image of this size goes through sliding windows under `spec` (or `window`)."""
    window = window or spec.window
    if spec.mode == "resize" or window is None:
        return False  # a resized image has the size the model was evaluated at, whatever its own
    return height * width > SLIDE_AREA * window[0] * window[1]


@dataclass(frozen=True)
class Windows:
    """When an image goes through sliding windows, and how: the one policy that evaluation and
    `segkit predict` hand to `segkit.infer.segment`."""

    mode: Literal["auto", "always", "never"] = "auto"
    """auto: `slides` (evaluation's own rule); always / never override it."""
    window: tuple[int, int] | None = None
    """Window (height, width); None takes the model's training crop (`InputSpec.window`)."""
    overlap: float = 0.25
    batch: int = 4
    """Windows per forward pass."""

    def size_for(self, spec: InputSpec) -> tuple[int, int] | None:
        return self.window or spec.window

    def applies(self, spec: InputSpec, height: int, width: int) -> bool:
        """Whether an image of this size goes through windows under this policy."""
        window = self.size_for(spec)
        if self.mode == "never" or window is None:
            return False
        return self.mode == "always" or slides(spec, height, width, window=window)


def starts(size: int, window: int, overlap: float) -> list[int]:
    """Window offsets along one side: evenly stepped, the last flush with the far edge."""
    if size <= window:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    offsets = list(range(0, size - window + 1, stride))
    if offsets[-1] != size - window:
        offsets.append(size - window)
    return offsets


def blend_weights(height: int, width: int) -> torch.Tensor:
    """(height, width) weights, 1 in the middle and falling linearly to a small floor at the edges."""
    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(i + 1, n - i).clamp(max=n / 4) / (n / 4)

    return ramp(height)[:, None] * ramp(width)[None, :] + 1e-3


def window_transform(model: Any) -> EvalTransform:
    """The model's evaluation transform without its resize: windows are cut at the image's own
    scale, and padded as the model's evaluation pads."""
    processor = copy.copy(model.image_processor())
    processor.do_resize = False
    return EvalTransform(processor, pad=model.input_spec.mode == "pad")


@torch.no_grad()
def sliding_mask(model: Any, image: Image.Image, window: tuple[int, int], overlap: float = 0.25, batch: int = 4,
                 device: torch.device | str = "cpu", autocast: Callable[[], ContextManager] | None = None,
                 flip: bool = False, scales: Sequence[float] = (1.0,)) -> np.ndarray:
    """(H, W) uint8 class ids for `image`, from windows of `window` (height, width).

    Test-time augmentation (`flip`, `scales`) applies to each window, so memory stays one band's
    whatever the scales: a large image is never rescaled whole."""
    width, height = image.size
    wh, ww = min(window[0], height), min(window[1], width)
    transform = window_transform(model)
    weights = blend_weights(wh, ww).to(device)
    ys, xs = starts(height, wh, overlap), starts(width, ww, overlap)
    mask = np.empty((height, width), dtype=np.uint8)
    band: torch.Tensor | None = None  # (C, wh, width): scores of the rows the current band covers
    for k, y in enumerate(ys):
        for first in range(0, len(xs), batch):
            group = xs[first: first + batch]
            pixels = torch.stack([transform(image.crop((x, y, x + ww, y + wh))) for x in group]).to(device)
            with autocast() if autocast is not None else nullcontext():
                scores = batch_scores(model, pixels, [(wh, ww)] * len(group), flip=flip, scales=scales)
            if band is None:
                band = torch.zeros((scores[0].shape[0], wh, width), device=device)
            for x, s in zip(group, scores):
                band[:, :, x: x + ww] += s.float() * weights
        done = (ys[k + 1] - y) if k + 1 < len(ys) else wh  # rows no later band reaches
        mask[y: y + done] = band[:, :done].argmax(0).to(torch.uint8).cpu().numpy()
        band = torch.cat([band[:, done:], torch.zeros_like(band[:, :done])], dim=1)
    return mask
