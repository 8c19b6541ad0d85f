"""`segment`: THE decision of how an image becomes a class-id mask.

Each image either runs whole (its transformed pixels through `segkit.infer.scores`, same-shaped
images batched together) or, when it is far larger than the training crops, through sliding
windows (`segkit.infer.sliding`); then the argmax. Evaluation, reports and overlays, `segkit
predict` and `SegModel.predict` all call this one function, so they cannot disagree on which
images slide or how flip is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from segkit.infer.scores import eval_transform, scores_for
from segkit.infer.sliding import Windows, sliding_mask


@dataclass
class Job:
    """One image to segment."""

    size: tuple[int, int]
    """(H, W) of the mask wanted: the label's, which is the original image's."""
    pixels: torch.Tensor | None = None
    """The image through the model's `eval_transform`; needed unless the image slides."""
    image: Image.Image | Callable[[], Image.Image] | None = None
    """The image itself (or a function that reads it), needed only if it slides: windows are cut
    from the original pixels, so a large image need not be decoded until then."""


def segment(model: Any, jobs: Sequence[Job], device: torch.device | str | None = None,
            autocast: Callable[[], ContextManager] | None = None, flip: bool = False,
            windows: Windows = Windows(), scales: Sequence[float] = (1.0,)) -> Iterator[tuple[int, torch.Tensor]]:
    """(index into `jobs`, (H, W) uint8 class-id mask on `device`) for every job.

    Whole images come first, group by group; the index says whose mask it is. `autocast` makes a
    mixed-precision context; `flip` averages with the mirrored image's scores, and `scales` other
    than (1.0,) averages the class probabilities of the image rescaled by each (multi-scale
    test-time augmentation; on sliding images, per window).
    """
    device = device or next(model.parameters()).device
    spec = model.input_spec
    slide = [windows.applies(spec, *job.size) for job in jobs]
    whole = [i for i, s in enumerate(slide) if not s]
    for k, scores in scores_for(model, [jobs[i].pixels for i in whole], [jobs[i].size for i in whole],
                                device, autocast, flip, scales):
        yield whole[k], scores.argmax(0).to(torch.uint8)
    for i in (i for i, s in enumerate(slide) if s):
        image = jobs[i].image
        if image is None:
            raise ValueError(f"An image of {jobs[i].size[1]}x{jobs[i].size[0]} px goes through sliding windows, "
                             "but only its transformed pixels were given; pass the image too.")
        image = image() if callable(image) else image
        mask = sliding_mask(model, image, windows.size_for(spec), windows.overlap, windows.batch, device, autocast,
                            flip, scales)
        yield i, torch.from_numpy(mask).to(device)


def segment_images(model: Any, images: Sequence[Image.Image], device: torch.device | str | None = None,
                   flip: bool = False, scales: Sequence[float] = (1.0,)) -> list[np.ndarray]:
    """(H, W) uint8 class-id masks for PIL images, each at its own size, as evaluation computes
    them (overlays, reports, tests)."""
    transform = eval_transform(model)
    spec, windows = model.input_spec, Windows()
    jobs = [Job((im.height, im.width), None if windows.applies(spec, im.height, im.width) else transform(im), im)
            for im in images]
    masks: list[np.ndarray] = [np.empty(0)] * len(images)
    for i, mask in segment(model, jobs, device, flip=flip, windows=windows, scales=scales):
        masks[i] = mask.cpu().numpy()
    return masks
