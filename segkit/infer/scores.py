"""From pixels to class scores at label size: what every inference (evaluation, overlays, `segkit
predict`, the exported image processor) computes underneath `segkit.infer.segment`.

A model is fed outside training the way its `InputSpec` says (`augment.eval_mode`):

- `resize`: the image is resized to `eval_size`; the scores are resized back to the label.
- `none`: the image goes in at its own size; the scores are resized to it.
- `pad`: as `none`, but padded bottom/right to a multiple of 32 first, and the scores cropped back
  to the image. Patch models (ViT) are padded to their patch this way whenever a side is off it.

The first two are exactly what the model's saved image processor and transformers'
`post_process_semantic_segmentation` do, so `pipeline("image-segmentation")` gives the masks that
produced the reported metrics. Padding cannot be written into an image processor: `segkit
predict` reproduces it, `pipeline` feeds such images unpadded.

Images of one batch run together only when their inputs have the same shape: padding them to a
common size would change what the model sees, and the scores with it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
import torch.nn.functional as F

from segkit.data.eval_transform import EvalTransform


def upsample_scores(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) scores to `size` (label resolution); a no-op if equal."""
    size = (int(size[0]), int(size[1]))
    if tuple(scores.shape[-2:]) == size:
        return scores
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def eval_transform(model: Any) -> EvalTransform:
    """The model's own evaluation transform: its saved image processor, plus `pad` mode."""
    return EvalTransform(model.image_processor(), pad=model.input_spec.mode == "pad")


def parse_scales(text: str | None) -> tuple[float, ...]:
    """`--tta scales=0.75,1.0,1.25` (or just `0.75,1.0,1.25`) -> (0.75, 1.0, 1.25); None -> (1.0,)."""
    if not text:
        return (1.0,)
    values = text.split("=", 1)[1] if text.startswith("scales=") else text
    try:
        scales = tuple(float(v) for v in values.split(",") if v.strip())
    except ValueError:
        scales = ()
    if not scales or any(not 0.1 <= s <= 4 for s in scales):
        raise ValueError(f"--tta {text}: give scales between 0.1 and 4, e.g. --tta scales=0.75,1.0,1.25")
    return scales


def describe_tta(scales: Sequence[float] = (1.0,), flip: bool = False) -> str:
    """What a report records: "none", "flip", "scales 0.75,1,1.25", "scales 0.75,1,1.25 + flip"."""
    parts = [] if tuple(scales) == (1.0,) else ["scales " + ",".join(f"{s:g}" for s in scales)]
    return " + ".join(parts + (["flip"] if flip else [])) or "none"


def _multi_scale(model: Any, pixels: torch.Tensor, out_sizes: Sequence[tuple[int, int]], flip: bool,
                 scales: Sequence[float]) -> list[torch.Tensor]:
    """Class probabilities averaged over the input rescaled by each of `scales`, each brought to
    `out_sizes` first (the label's: every view is compared on the same pixels)."""
    resized = model.input_spec.mode == "resize"
    total: list[torch.Tensor] | None = None
    for s in scales:
        if s == 1.0:
            views = batch_scores(model, pixels, out_sizes, flip)
        else:
            scaled = F.interpolate(pixels, scale_factor=s, mode="bilinear", align_corners=False)
            if resized:  # the whole input maps onto the output, whatever its size
                views = batch_scores(model, scaled, out_sizes, flip)
            else:  # the image sits in the top-left corner, now s times its size
                corners = [(max(1, round(h * s)), max(1, round(w * s))) for h, w in out_sizes]
                views = [upsample_scores(v[None], tuple(size))[0]
                         for v, size in zip(batch_scores(model, scaled, corners, flip), out_sizes)]
        probs = [v.float().softmax(0) for v in views]
        total = probs if total is None else [a + b for a, b in zip(total, probs)]
    return [t / len(scales) for t in total]


def batch_scores(model: Any, pixels: torch.Tensor, out_sizes: Sequence[tuple[int, int]],
                 flip: bool = False, scales: Sequence[float] = (1.0,)) -> list[torch.Tensor]:
    """Scores (C, H, W) for each image of one same-shaped batch (B, 3, h, w), at its `out_sizes`.

    A resized input maps as a whole onto its output. Any other input holds the image at its own
    size in its top-left corner (after `pad` mode's padding), so the scores are brought to the input
    size and cropped to the image. Inputs smaller than the model takes, or off a patch model's
    grid, are padded the same way. `flip` averages with the scores of the mirrored images.

    `scales` other than (1.0,) is multi-scale test-time augmentation: the class probabilities
    (softmax) of every scale, each at `out_sizes`, are averaged (`_multi_scale`).
    """
    if tuple(scales) != (1.0,):
        return _multi_scale(model, pixels, out_sizes, flip, scales)
    resized = model.input_spec.mode == "resize"
    if flip:
        mirrored = pixels.flip(-1) if resized else _mirror_corners(pixels, out_sizes)
        pairs = zip(batch_scores(model, pixels, out_sizes), batch_scores(model, mirrored, out_sizes))
        return [(a + b.flip(-1)) / 2 for a, b in pairs]
    h, w = pixels.shape[-2:]
    if not resized:
        d = model.size_divisor if model.strict_size else 1
        need_h, need_w = max(h, model.min_size), max(w, model.min_size)
        # bottom/right only: the image keeps the top-left corner that the crop below takes
        pixels = F.pad(pixels, (0, -(-need_w // d) * d - w, 0, -(-need_h // d) * d - h))
    scores = model(pixels).scores
    if resized:
        return [upsample_scores(scores[i: i + 1], tuple(size))[0] for i, size in enumerate(out_sizes)]
    out = []
    for i, (oh, ow) in enumerate(out_sizes):
        one = scores[i: i + 1]
        if (oh, ow) != tuple(pixels.shape[-2:]):  # padded: scores at input size, then the image's corner
            one = upsample_scores(one, tuple(pixels.shape[-2:]))[..., :oh, :ow]
        out.append(upsample_scores(one, (oh, ow))[0])
    return out


def _mirror_corners(pixels: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Each image mirrored inside its top-left (H, W) corner, the padding left where it is."""
    out = pixels.clone()
    for i, (h, w) in enumerate(sizes):
        out[i, :, :h, :w] = pixels[i, :, :h, :w].flip(-1)
    return out


def group_by_shape(inputs: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of same-shaped inputs, grouped, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape), []).append(i)
    return list(groups.values())


@torch.no_grad()
def scores_for(model: Any, inputs: Sequence[torch.Tensor], out_sizes: Sequence[tuple[int, int]],
               device: torch.device | str | None = None, autocast: Callable[[], ContextManager] | None = None,
               flip: bool = False, scales: Sequence[float] = (1.0,)) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, float scores (C, H, W)) for each transformed input (`eval_transform`), at its
    `out_sizes` (the label's, which is the original image's). Same-shaped inputs run as one batch,
    so results come group by group; the index says whose they are.

    `autocast` makes a mixed-precision context (accelerate's `autocast`, or torch.autocast);
    `flip` adds the mirrored image and `scales` rescaled ones (test-time augmentation).
    """
    device = device or next(model.parameters()).device
    for group in group_by_shape(inputs):
        pixels = torch.stack([inputs[i] for i in group]).to(device)
        with autocast() if autocast is not None else nullcontext():
            scores = batch_scores(model, pixels, [tuple(out_sizes[i]) for i in group], flip, scales)
        for i, s in zip(group, scores):
            yield i, s.float()
