"""AdamW with two learning rates (pretrained backbone, new head) and a warmup-then-decay schedule."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from segkit.config.sections import TrainConfig
from segkit.train.time_budget import Plan


def _split_decay(params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Norm scales and biases (1-D tensors) get no weight decay: decaying them only hurts."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Backbone parameters learn at `lr * backbone_lr_scale`; the freshly initialised head at `lr`.

    A pretrained encoder is already good; a full learning rate on it tends to undo that while the
    random head is still noisy.
    """
    backbone, head = model.param_groups()
    groups = []
    for params, lr in ((backbone, cfg.lr * cfg.backbone_lr_scale), (head, cfg.lr)):
        decay, no_decay = _split_decay(params)
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    if not groups:
        raise ValueError("The model has no trainable parameters: is everything frozen?")
    # fused on CUDA: faster, and it takes the non-finite guard's verdict as `found_inf`, so a bad
    # step is skipped on the device with no host sync (train/guard.py)
    fused = True if torch.cuda.is_available() else None
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def decay(kind: str, progress: float) -> float:
    """Multiplier of the peak lr at `progress` (0..1) of the decay."""
    if kind == "poly":
        return (1.0 - progress) ** 0.9  # the DeepLab/mmseg convention
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    return 1.0


def lr_factor(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step `step`: linear warmup, then the chosen decay."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay(kind, min(1.0, (step - warmup) / max(1, total - warmup)))

    return factor


def planned_factor(kind: str, warmup_ratio: float, plan: Plan, warmup_steps: int = 0) -> Callable[[int], float]:
    """As `lr_factor`, over a plan whose length may change while it runs (a time budget): it reads
    `plan.progress`, which stays continuous across re-plans, so the lr never jumps. A warmup in
    steps (a recipe written for epochs, run on a budget) ramps the decayed rate up over its first
    `warmup_steps`: the product of two continuous curves, whatever the plan does."""

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        if warmup_ratio and plan.progress(step) < warmup_ratio:
            return min(1.0, plan.progress(step + 1) / warmup_ratio)
        return ramp * decay(kind, (plan.progress(step) - warmup_ratio) / (1.0 - warmup_ratio))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, plan: Plan | None = None):
    """LambdaLR over `total_steps`, or over `plan` for a time budget. With `warmup_ratio` and no
    plan, the warmup is that share of `total_steps`."""
    if plan is not None:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, planned_factor(cfg.schedule, cfg.warmup_ratio, plan, cfg.warmup_steps))
    warmup = cfg.warmup_steps or round(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, warmup, total_steps))
