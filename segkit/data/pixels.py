"""What a training batch carries from the DataLoader workers to the device, and how it becomes
model input there.

Training crops travel as uint8: images (B, 3, H, W) and labels (B, H, W), 255 = ignored (every
training id is below 255, so labels fit). That is 1 byte per channel and per label pixel instead of
4 and 8: at 512², 1 MB per image instead of 5, which is what pinned, non-blocking copies can keep
ahead of an H100. Normalisation with the model's mean/std happens on the device (`DeviceNormalise`),
with the same float32 arithmetic as albumentations' `Normalize`, so the model sees bit for bit the
values it saw when the workers normalised.

Evaluation items are unchanged (float32 from the model's own image processor): their masks must stay
the ones `pipeline` and `segkit predict` give.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MAX_PIXEL = 255.0


def hwc_to_chw_uint8(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8, contiguous (pinning and stacking need it)."""
    if image.dtype != np.uint8:
        raise TypeError(f"training images travel as uint8; got {image.dtype} (a transform converted it)")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class DeviceNormalise:
    """uint8 (B, 3, H, W) -> float32 normalised, on whatever device the batch is on.

    (x - 255 * mean) * 1 / (255 * std) in float32, the constants made exactly as albumentations'
    `Normalize(mean, std, max_pixel_value=255)` makes them (its uint8 lookup table computes the same
    expression in float32), so moving the step from the workers to the device changes no value. A
    float input is taken as already normalised and passed through.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.array(mean, dtype=np.float32) * MAX_PIXEL
        self.denominator = np.reciprocal(np.array(std, dtype=np.float32) * MAX_PIXEL)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8:
            return pixels
        if pixels.device not in self._on:  # made once per device: no host-to-device copy per step
            self._on[pixels.device] = tuple(torch.from_numpy(v).to(pixels.device).view(1, -1, 1, 1)
                                            for v in (self.mean, self.denominator))
        mean, denominator = self._on[pixels.device]
        return (pixels.float() - mean) * denominator
