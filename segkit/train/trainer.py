"""`Trainer`: everything the training loop touches, built once by `segkit.train.loop.setup`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from segkit.config.recipe import Recipe
from segkit.config.sections import TrainConfig
from segkit.data.dataset import DataBundle
from segkit.data.pixels import DeviceNormalise
from segkit.data.skips import SkipLog
from segkit.run_folder import RunFolder
from segkit.train.checkpoint import TrainerState
from segkit.train.ema import WeightEMA
from segkit.train.guard import StepGuard
from segkit.train.losses import SegLoss
from segkit.train.runtime import StopRequest
from segkit.train.time_budget import BudgetClock


@dataclass
class Trainer:
    """Everything the loop touches, built once by `setup`."""

    recipe: Recipe
    run: RunFolder
    accelerator: Accelerator
    model: torch.nn.Module
    """The prepared model (DDP-wrapped under several processes); `accelerator.unwrap_model` gives
    the SegModel."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: SegLoss | None
    """segkit's pixel loss, or None for families that train on their own loss."""
    loader: DataLoader
    items: Any
    """The object whose `set_epoch` reseeds augmentation (the seeded items, or the stream)."""
    sampler: Any
    val_loader: DataLoader | None
    data: DataBundle
    total_steps: int
    epochs: int
    state: TrainerState
    stop: StopRequest
    eval_at_start: bool = False
    """Score val before the first step (a classifier built from the checkpoint's has a starting point)."""
    guard: StepGuard | None = None
    """The non-finite guard (train/guard.py); `fit` builds it with the resumed counts."""
    skips: SkipLog | None = None
    """Unreadable training samples met so far (RUN/skipped.csv); `fit` builds it."""
    last_batch: dict[str, Any] | None = None
    """The last batch with a readable sample: the stand-in, at weight 0, for a batch of none
    under several processes (segkit.train.faults.batch_to_step_on)."""
    budget: BudgetClock | None = None
    """`train.time_budget`'s clock and plan (train/time_budget.py); None trains by epochs or steps."""
    ema: WeightEMA | None = None
    """The weight average (`train.ema_decay`): what evaluation scores and export writes."""
    started: float = 0.0
    """time.perf_counter() when `train` began: the start of the budget and of `elapsed_s`."""
    normalise: DeviceNormalise | None = None
    """The model's mean/std applied to the uint8 batches on the device (segkit.data.pixels)."""

    @property
    def cfg(self) -> TrainConfig:
        return self.recipe.train
