"""Pixel losses for families that score every pixel (SegFormer, ViT heads), with class-imbalance tools.

When a dataset is cut down to a few classes and everything else becomes background, background holds
most pixels (about 94% on CamVid with car, pedestrian, bicyclist, sign_symbol) and plain
cross-entropy can leave small classes at IoU 0. The recipe knobs, from least to most intrusive:

- `loss.class_weights`: scale each pixel's loss by its class's rarity (`sqrt_inverse` is a safe start).
- `loss.name: ohem`: only the hardest pixels count, so easy background stops dominating the mean.
- `loss.name: focal`: down-weights pixels the model already gets right, smoothly instead of a cut.
- `loss.dice` / `loss.lovasz`: add a term that scores each class as a whole region, so a class with
  few pixels counts as much as background. They optimise overlap (IoU) more directly.

Every loss takes `scores` (B, C, H, W) logits at label size and `target` (B, H, W) int64, skips
pixels labelled 255 (`IGNORE_INDEX`), and returns a scalar. A batch with no labelled pixel gives a
zero that is still connected to `scores`, so `backward()` works and never sees NaN.
MaskFormer/Mask2Former train with their own set loss; nothing here applies to them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config.auto import resolved
from segkit.config.sections import LossConfig
from segkit.labels import IGNORE_INDEX
from segkit.train.class_weights import PixelCounts, class_weights

OHEM_MIN_KEPT = 4096
"""OHEM keeps at least this many pixels (or all labelled ones, if fewer), so a batch that is mostly
255 still averages over a reasonable number of pixels."""

def _zero(scores: torch.Tensor) -> torch.Tensor:
    """A 0 that backpropagates (zero grads) into `scores`, for batches with nothing to score."""
    return scores.sum() * 0.0


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # Clamping the denominator instead of branching on "any labelled pixel" keeps the GPU from
    # syncing; with no labelled pixel the numerator is an exact 0 times the graph.
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def _pixel_weights(target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel weight (B, H, W): the class weight of its label, 0 where the label is 255."""
    valid = target != IGNORE_INDEX
    if weight is None:
        return valid.float()
    safe = target.masked_fill(~valid, 0)
    return weight.to(target.device)[safe] * valid


class CrossEntropy(nn.Module):
    """Cross-entropy, weighted per class: sum_i w_{y_i} * -log p_i(y_i) / sum_i w_{y_i}.

    When to use: the default. Add `class_weights` when small classes are ignored by the model.
    """

    def __init__(self, weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(scores, target, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
        return _weighted_mean(nll, _pixel_weights(target, self.weight))


class OhemCrossEntropy(nn.Module):
    """Online hard-example mining: cross-entropy over the hardest `keep` share of labelled pixels.

    Pixels are ranked by their unweighted cross-entropy (how wrong the model is); the k hardest are
    averaged, with class weights if given. k = max(ceil(keep * n), min(min_kept, n)) for n labelled
    pixels. When to use: background is easy and plentiful, and you want the loss to spend its signal
    on boundaries and small objects without choosing per-class weights.
    """

    def __init__(self, keep: float = 0.25, weight: torch.Tensor | None = None, min_kept: int = OHEM_MIN_KEPT):
        super().__init__()
        if not 0 < keep <= 1:
            raise ValueError(f"loss.ohem_keep: a share in (0, 1]; got {keep}")
        self.keep = keep
        self.min_kept = min_kept
        self.register_buffer("weight", weight)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(scores, target, ignore_index=IGNORE_INDEX, reduction="none").flatten()
        weights = _pixel_weights(target, self.weight).flatten()
        labelled = target.flatten() != IGNORE_INDEX
        # 255 pixels rank below every labelled one (their nll is 0, so push them to -inf).
        ranking = nll.detach().masked_fill(~labelled, float("-inf"))
        if scores.device.type != "cpu":
            return self._sorted(nll, weights, ranking, labelled.sum())
        n = int(labelled.sum())  # topk needs k as a Python int; on the CPU reading it costs nothing
        if n == 0:
            return _zero(scores)
        k = max(math.ceil(self.keep * n), min(self.min_kept, n))
        hardest = ranking.topk(k).indices
        return _weighted_mean(nll[hardest], weights[hardest])

    def _sorted(self, nll: torch.Tensor, weights: torch.Tensor, ranking: torch.Tensor,
                n: torch.Tensor) -> torch.Tensor:
        """The same pixels without reading n on the host: sort them all (about a millisecond for
        2 M pixels on a GPU) and give everything past the k-th a weight of 0. k is a tensor, made in
        float64 so that ceil(keep * n) rounds as Python's does. Equal to the topk form up to the order
        of the float sums (tests/test_set_targets.py); n = 0 gives k = 0, an exact connected 0."""
        k = torch.maximum(torch.ceil(n.double() * self.keep), torch.clamp(n, max=self.min_kept).double())
        order = ranking.argsort(descending=True)
        kept = torch.arange(order.numel(), device=order.device) < k
        return _weighted_mean(nll[order], weights[order] * kept)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): sum_i a_{y_i} (1 - p_i)^gamma * -log p_i / sum_i a_{y_i}.

    p_i is the probability of the true class; a = class weights (alpha), or 1. gamma = 0 is
    cross-entropy; larger gamma lowers the loss of pixels already right with confidence, which are
    mostly background. When to use: like OHEM, but smooth; try gamma 2.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"loss.focal_gamma: must be >= 0; got {gamma}")
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = -F.cross_entropy(scores, target, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
        # 1 - p via expm1 keeps precision when p is close to 1. The clamp keeps the gradient of
        # x**gamma finite at x = 0 (gamma < 1), where it would otherwise be inf * 0 = NaN.
        miss = (-torch.expm1(log_p)).clamp_min(1e-12)
        focal = miss.pow(self.gamma) * -log_p
        return _weighted_mean(focal, _pixel_weights(target, self.weight))


def _labelled_probs(scores: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (P, C) and labels (P,) of the labelled pixels only."""
    num_classes = scores.shape[1]
    probs = scores.softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.reshape(-1)
    keep = labels != IGNORE_INDEX
    return probs[keep], labels[keep]


def _class_counts(labels: torch.Tensor, valid: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labelled pixels per class (C,); invalid pixels go to an extra bin that is dropped.

    An integer index_add, not `torch.bincount`: on CUDA bincount reads the largest value on the
    host to size its output, a sync per call. Integer sums are exact, so the counts are the same."""
    binned = labels.masked_fill(~valid, num_classes).flatten()
    counts = torch.zeros(num_classes + 1, dtype=torch.long, device=labels.device)
    return counts.index_add_(0, binned, torch.ones_like(binned))[:num_classes]


class DiceLoss(nn.Module):
    """Soft Dice over the batch: mean over classes of 1 - 2 sum(p_c g_c) / (sum p_c + sum g_c).

    p_c are softmax probabilities and g_c one-hot labels over the labelled pixels of the whole batch.
    Only classes present in the target or in the prediction (argmax) count: a class in neither has no
    region to overlap (0/0), and a class predicted but absent scores Dice 0, which penalises the false
    positives. When to use: added to a pixel loss (`loss.dice: 0.5..1`), it makes each class count
    as a region regardless of its size, which lifts small classes.
    """

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Sums stay in the (B, C, H, W) layout: a one-hot copy would cost B*C*H*W floats, 1.2 GB
        # for a batch of 8 at 512x512 with ADE20K's 150 classes.
        num_classes = scores.shape[1]
        valid = target != IGNORE_INDEX
        probs = scores.softmax(dim=1) * valid[:, None]  # 255 pixels count nowhere
        safe = target.masked_fill(~valid, 0)
        p_true = probs.gather(1, safe[:, None]).flatten()  # 0 at 255 pixels
        inter = p_true.new_zeros(num_classes).index_add(0, safe.flatten(), p_true)
        labelled = _class_counts(target, valid, num_classes)
        predicted = _class_counts(scores.argmax(dim=1), valid, num_classes)
        dice = 2 * inter / (probs.sum(dim=(0, 2, 3)) + labelled).clamp_min(1e-12)
        present = ((labelled > 0) | (predicted > 0)).to(dice.dtype)
        # A mean over present classes; with none present (all 255) this is an exact, connected 0.
        return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss, for errors sorted in decreasing order.

    After the i most wrong pixels are counted as errors, the Jaccard loss of class c is
    J_i = 1 - (G - fg_i) / (G + bg_i), with G the pixels of c, fg_i the pixels of c among the first i
    and bg_i the others. The weight of the i-th error is J_i - J_{i-1} (J_0 = 0).
    """
    total = gt_sorted.sum()
    fg = gt_sorted.cumsum(0)
    bg = (1 - gt_sorted).cumsum(0)
    jaccard = 1 - (total - fg) / (total + bg)  # total + bg >= 1 from the first pixel on
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax (Berman et al. 2018) of probs (P, C) against labels (P,), classes in the labels.

    For each class present, the errors |1[y = c] - p_c| are sorted and dotted with `lovasz_grad`: a
    convex surrogate of 1 - IoU_c. The mean over present classes is a surrogate of 1 - mIoU.
    """
    losses = []
    for c in labels.unique().tolist():
        fg = (labels == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = errors.sort(descending=True)
        losses.append(errors_sorted @ lovasz_grad(fg[order]))
    return torch.stack(losses).mean()


class LovaszSoftmax(nn.Module):
    """Lovász-softmax: a surrogate of 1 - IoU, averaged over the classes present in the target.

    `per_image=False` pools the batch (cheaper, and a rare class gets more pixels to rank);
    `per_image=True` averages per-image losses. When to use: added to a pixel loss
    (`loss.lovasz: 0.5..1`) late in fine-tuning or from the start, to push IoU of small classes.
    It sorts all labelled pixels once per present class, so it costs more than Dice.

    It reads the present classes on the host (a sync per step, on a GPU). A sync-free form would
    sort every pixel once for every class of the label set, present or not: 150 sorts instead of
    a few with ADE20K's classes, which costs more than the sync it saves.
    """

    def __init__(self, per_image: bool = False):
        super().__init__()
        self.per_image = per_image

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pairs = (
            [_labelled_probs(s[None], t[None]) for s, t in zip(scores, target)]
            if self.per_image
            else [_labelled_probs(scores, target)]
        )
        losses = [lovasz_softmax_flat(p, y) for p, y in pairs if y.numel() > 0]
        if not losses:
            return _zero(scores)
        return torch.stack(losses).mean()


class SegLoss(nn.Module):
    """The training loss: a pixel loss plus optional Dice and Lovász terms, each times its weight.

    `weight` holds the class weights in use (or None), for the training log and the model card.
    """

    def __init__(
        self,
        pixel: nn.Module,
        dice: float = 0.0,
        lovasz: float = 0.0,
        weight: torch.Tensor | None = None,
    ):
        super().__init__()
        self.pixel = pixel
        self.dice_coef = dice
        self.lovasz_coef = lovasz
        self.dice = DiceLoss() if dice > 0 else None
        self.lovasz = LovaszSoftmax() if lovasz > 0 else None
        self.register_buffer("weight", weight)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if scores.ndim != 4 or target.shape != (scores.shape[0], *scores.shape[2:]):
            raise ValueError(
                f"loss: scores {tuple(scores.shape)} must be (B, C, H, W) at the size of target "
                f"{tuple(target.shape)}. Upsample the logits to label size first (segkit.models.outputs)."
            )
        scores = scores.float()  # softmax/log in fp32 even under bf16 autocast
        target = target.long()
        loss = self.pixel(scores, target)
        if self.dice is not None:
            loss = loss + self.dice_coef * self.dice(scores, target)
        if self.lovasz is not None:
            loss = loss + self.lovasz_coef * self.lovasz(scores, target)
        return loss


def build_loss(cfg: LossConfig, num_classes: int, stats: PixelCounts | None = None) -> SegLoss:
    """The loss a recipe asks for. `stats` (train-split ClassStats) is needed for computed weights."""
    weight = class_weights(resolved(cfg.class_weights, "loss.class_weights"), stats, num_classes)
    pixel_losses = {
        "ce": lambda: CrossEntropy(weight),
        "ohem": lambda: OhemCrossEntropy(cfg.ohem_keep, weight),
        "focal": lambda: FocalLoss(cfg.focal_gamma, weight),
    }
    if cfg.name not in pixel_losses:
        raise ValueError(f"loss.name: '{cfg.name}' is unknown. Choose one of: {', '.join(pixel_losses)}")
    return SegLoss(pixel_losses[cfg.name](), dice=cfg.dice, lovasz=cfg.lovasz, weight=weight)


def describe_loss(cfg: LossConfig, weights: torch.Tensor | None, names: Sequence[str] | None = None) -> str:
    """One line for the training log, e.g.
    `loss: focal(gamma=2) + 0.5*dice; class weights sqrt_inverse: background=0.6 car=3.1`."""
    pixel = {
        "ce": "ce",
        "ohem": f"ohem(keep={cfg.ohem_keep:g})",
        "focal": f"focal(gamma={cfg.focal_gamma:g})",
    }.get(cfg.name, cfg.name)
    terms = [pixel]
    terms += [f"{coef:g}*{term}" for term, coef in (("dice", cfg.dice), ("lovasz", cfg.lovasz)) if coef > 0]
    line = "loss: " + " + ".join(terms)
    if weights is None:
        return line + "; no class weights"
    values = [float(w) for w in weights]
    if names is None or len(names) != len(values):
        names = [str(i) for i in range(len(values))]
    kind = cfg.class_weights if isinstance(cfg.class_weights, str) else "given"
    per_class = " ".join(f"{n}={v:.3g}" for n, v in zip(names, values))
    return f"{line}; class weights {kind}: {per_class}"
