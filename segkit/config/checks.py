"""The recipe's checks beyond types: ranges, and settings that only make sense together. Every
problem is collected (the caller raises them at once) and names its field and the fix."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from segkit.config.sections import CLASS_WEIGHT_KINDS, ModelConfig, TrainConfig
from segkit.models.registry import FAMILIES, unknown_family

if TYPE_CHECKING:
    from segkit.config.recipe import Recipe


def check_recipe(r: Recipe, errors: list[str]) -> None:
    """Ranges and settings that depend on each other; each problem names its field and the fix."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            errors.append(msg)

    t, a, m, d, lo = r.train, r.augment, r.model, r.data, r.loss
    need(t.epochs > 0 or (t.max_steps or 0) > 0, "train.epochs: must be > 0 (or set train.max_steps)")
    need(t.max_steps is None or t.max_steps > 0, "train.max_steps: must be > 0, or null to use epochs")
    need(t.batch_size >= 1, "train.batch_size: must be >= 1")
    need(t.eval_batch_size is None or t.eval_batch_size >= 1, "train.eval_batch_size: must be >= 1")
    need(t.grad_accum >= 1, "train.grad_accum: must be >= 1")
    need(0 < t.lr < 1, f"train.lr: {t.lr} is out of range; typical fine-tuning values are 1e-5..1e-3")
    need(t.backbone_lr_scale >= 0, "train.backbone_lr_scale: must be >= 0")
    need(t.weight_decay >= 0, "train.weight_decay: must be >= 0")
    need(t.warmup_steps >= 0, "train.warmup_steps: must be >= 0")
    need(t.max_grad_norm >= 0, "train.max_grad_norm: must be >= 0 (0 turns clipping off)")
    need(t.eval_every >= 0, "train.eval_every: must be >= 0 (0 = each epoch)")
    need(t.checkpoint_every >= 0, "train.checkpoint_every: must be >= 0 (0 = with each evaluation)")
    need(t.keep_last >= 1, "train.keep_last: must be >= 1")
    need(t.early_stopping >= 0, "train.early_stopping: must be >= 0 (0 = off)")
    need(t.num_workers == "auto" or t.num_workers >= 0, "train.num_workers: must be >= 0, or auto")
    need(t.prefetch_factor >= 1, "train.prefetch_factor: must be >= 1")
    need(t.log_every >= 1, "train.log_every: must be >= 1")
    need(t.num_overlays >= 0, "train.num_overlays: must be >= 0")
    need(t.sampler_power >= 0, "train.sampler_power: must be >= 0")
    need(t.max_bad_steps >= 1, "train.max_bad_steps: must be >= 1 (non-finite steps in a row before stopping)")
    _check_train_plan(t, m, errors)
    need(d.max_skipped >= 0 and (d.max_skipped < 1 or float(d.max_skipped).is_integer()),
         f"data.max_skipped: {d.max_skipped} is neither a count (a whole number >= 1) nor a share (0..1)")
    for name, size in (("augment.crop_size", a.crop_size), ("augment.eval_size", a.eval_size)):
        sides = size if isinstance(size, list) else [size] if size is not None else []
        need(len(sides) in (0, 1, 2) and all(s >= 8 for s in sides), f"{name}: give one side or [height, width], each >= 8")
    need(len(a.scale) == 2 and 0 < a.scale[0] <= a.scale[1], "augment.scale: give [min, max] with 0 < min <= max")
    need(0 <= a.rotate <= 180, "augment.rotate: degrees in 0..180")
    need(0 <= a.color_jitter <= 1, "augment.color_jitter: strength in 0..1")
    need(0 < a.cat_max_ratio <= 1, "augment.cat_max_ratio: a share in (0, 1]; 1 turns it off")
    need(m.family in FAMILIES, unknown_family(m.family))
    need(not (m.checkpoint and m.size), "model: set either model.checkpoint (pretrained) or model.size (random weights), not both")
    need(0 <= d.val_fraction < 1, "data.val_fraction: a share in [0, 1)")
    need(d.format != "synthetic" or d.synthetic_samples >= 1, "data.synthetic_samples: must be >= 1")
    need(d.format in ("synthetic", "ade20k", "sidewalk") or bool(d.path), f"data.path: format '{d.format}' needs a path (repo id or folder)")
    need(0 < lo.ohem_keep <= 1, "loss.ohem_keep: a share in (0, 1]")
    need(lo.dice >= 0 and lo.lovasz >= 0, "loss.dice / loss.lovasz: weights must be >= 0")
    if isinstance(lo.class_weights, str):
        need(lo.class_weights in CLASS_WEIGHT_KINDS,
             f"loss.class_weights: use {', '.join(CLASS_WEIGHT_KINDS)}, a list of numbers, or null")
    for cap in ("max_samples", "max_eval_samples"):
        v = getattr(r.classes, cap)
        need(v is None or v >= 1, f"classes.{cap}: must be >= 1, or null for no cap")


def parse_duration(value: str | float | int) -> float:
    """`90s`, `10m`, `1.5h`, `2h30m` or a number of seconds -> seconds; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"((?:\d+(?:\.\d*)?|\.\d+)[hms])+", text)
        if parts is None:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration") from None
        else:
            units = {"h": 3600.0, "m": 60.0, "s": 1.0}
            seconds = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)([hms])", text))
    if not seconds > 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def _check_train_plan(t: TrainConfig, m: ModelConfig, errors: list[str]) -> None:
    """The time budget, the warmup, EMA and calibration settings, which depend on each other."""
    if t.time_budget is not None:
        try:
            parse_duration(t.time_budget)
        except ValueError:
            errors.append(f"train.time_budget: {t.time_budget!r} is not a duration; write e.g. 90s, 10m, 1.5h "
                          "(or seconds), or null to train by epochs or max_steps")
    if t.budget_evals < 1:
        errors.append("train.budget_evals: must be >= 1 (evaluations spread over a time budget)")
    if not 0 <= t.warmup_ratio < 1:
        errors.append("train.warmup_ratio: a share of the planned steps in [0, 1)")
    if t.warmup_ratio and t.warmup_steps:
        errors.append("train.warmup_ratio / train.warmup_steps: set one of them, not both")
    if t.ema_decay is not None and not 0 < t.ema_decay < 1:
        errors.append(f"train.ema_decay: {t.ema_decay} is out of range; use a decay in (0, 1) such as 0.999, or null")
    if t.calibrate is True and m.family in FAMILIES and FAMILIES[m.family].query_based:
        errors.append(f"train.calibrate: {m.family} scores pixels with query probabilities, not per-pixel logits: an "
                      "offset on its class logits passes through each query's softmax and does not shift pixel "
                      "scores the way the fit assumes. Set train.calibrate: false (the default) or auto (skipped for it)")
