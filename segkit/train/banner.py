"""What a run is about to do, printed before step 1, and the same settings flattened for trackers."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from accelerate import Accelerator

from segkit.config.recipe import Recipe
from segkit.data.dataset import DataBundle
from segkit.data.source import SPLITS
from segkit.models.base import SegModel
from segkit.precision import Precision
from segkit.train.losses import SegLoss, describe_loss


def banner(recipe: Recipe, data: DataBundle, model: SegModel, accelerator: Accelerator, criterion: SegLoss | None,
           threads: str, precision: Precision, head: str | None = None) -> str:
    """What is about to run, including each class's share of training pixels: a class at 0.3%
    explains a weak IoU before any training happens."""
    sizes = ", ".join(f"{s} {len(d) if hasattr(d, '__len__') else 'streamed'}"
                      for s in SPLITS if (d := getattr(data, s)) is not None)
    share = data.stats.pixel_share(exclude_ignored=True)
    classes = ", ".join(f"{n} {100 * p:.2f}%" for n, p in zip(data.labels.names, share))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    origin = recipe.model.checkpoint or f"random weights, size {recipe.model.size}"
    loss = (describe_loss(recipe.loss, criterion.weight, data.labels.names) if criterion is not None
            else f"loss: {recipe.model.family}'s own set loss")
    return "\n".join([
        f"segkit train: {recipe.name}",
        f"  data     {recipe.data.format}: {sizes} images",
        f"  classes  share of labelled training pixels: {classes}",
        f"  model    {recipe.model.family} ({origin}), {params:.2f} M parameters",
        *([f"  head     {head}"] if head else []),
        f"  device   {accelerator.device} x{accelerator.num_processes}, precision {precision.why}"
        + (f", {threads}" if accelerator.device.type == "cpu" else ""),
        f"  {loss}",
        *([f"  defaults {recipe.auto_note}"] if recipe.auto_note else []),
    ])


def flat_config(recipe: Recipe) -> dict[str, Any]:
    """Trackers want scalars: flatten sections and stringify lists."""
    flat = {}
    for section, values in asdict(recipe).items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        else:
            flat[section] = values
    return flat
