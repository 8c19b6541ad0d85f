"""How a model is fed outside training: its own image processor, plus segkit's `eval_mode: pad`.

Light on purpose (numpy, torch, Pillow; transformers only when a processor is built): inference
and the model families import it without the training pipeline's albumentations and OpenCV.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segkit.config.sections import InputSpec

PAD_DIVISOR = 32
"""`eval_mode: pad` pads images to a multiple of this: the strides of the convolutional and Swin
encoders divide it (patch models pad further to their patch, in `segkit.infer.scores`)."""


class EvalTransform:
    """A PIL RGB image -> (3, h, w) float32 tensor, as the model is fed outside training.

    The work is the image processor's (the one saved with the model, so `pipeline` does the same);
    `pad` adds segkit's `eval_mode: pad`, bottom/right to `PAD_DIVISOR`, which no processor does.
    Picklable, so DataLoader workers run it.
    """

    def __init__(self, processor: Any, pad: bool = False) -> None:
        self.processor, self.pad = processor, pad

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(self.processor(images=image, return_tensors="np")["pixel_values"][0]))
        if self.pad:
            h, w = pixels.shape[-2:]
            pixels = F.pad(pixels, (0, (-w) % PAD_DIVISOR, 0, (-h) % PAD_DIVISOR))
        return pixels


def eval_processor(spec: InputSpec | None, mean: Sequence[float], std: Sequence[float]) -> Any:
    """SegFormer's Pil processor, which does exactly resize -> rescale -> normalise like every
    family's: the evaluation processor for data without a model yet (`segkit inspect`, tests), and
    the processor of the vit family. Without `spec`, SegFormer's own defaults (resize to 512)."""
    from transformers import SegformerImageProcessorPil  # transformers is slow to import; only here

    if spec is None:
        return SegformerImageProcessorPil(image_mean=list(mean), image_std=list(std), do_reduce_labels=False)
    size = {"height": spec.size[0], "width": spec.size[1]} if spec.size else None
    return SegformerImageProcessorPil(do_resize=spec.mode == "resize", image_mean=list(mean), image_std=list(std),
                                      do_reduce_labels=False, **({"size": size} if size else {}))
