"""Any family's raw output -> (B, C, H, W) class scores. The one place that knows the formats.

Loss, metrics, overlays and prediction read `SegOutput.scores` and bring them to label size with
`segkit.infer.scores.upsample_scores`; none of them branch on the model family.
"""

from __future__ import annotations

from typing import Any

import torch

from segkit.infer.scores import upsample_scores


def to_scores(outputs: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, C, h, w) scores from a model output, optionally upsampled to `size`.

    - Outputs with `logits` (SegFormer, segkit's ViT heads): the logits themselves.
    - MaskFormer/Mask2Former outputs (`class_queries_logits` (B, Q, C+1), `masks_queries_logits`
      (B, Q, h, w)): each query votes for classes with its softmax (the last, "no object" column
      dropped) over the pixels of its sigmoid mask; the sum over queries is a per-pixel class
      probability map, as in the MaskFormer paper's semantic inference.
    """
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        scores = logits
    else:
        class_logits = getattr(outputs, "class_queries_logits", None)
        mask_logits = getattr(outputs, "masks_queries_logits", None)
        if class_logits is None or mask_logits is None:
            raise TypeError(f"{type(outputs).__name__} has neither `logits` nor "
                            "`class_queries_logits` + `masks_queries_logits`; cannot make scores.")
        class_probs = class_logits.softmax(-1)[..., :-1]  # (B, Q, C): null class dropped
        mask_probs = mask_logits.sigmoid()  # (B, Q, h, w)
        scores = torch.einsum("bqc,bqhw->bchw", class_probs, mask_probs)
    return scores if size is None else upsample_scores(scores, size)
