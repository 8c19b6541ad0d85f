"""An exponential moving average of the weights (`train.ema_decay`), as timm's `ModelEmaV3` and
Ultralytics' `ModelEMA` keep it.

The average is what evaluation scores, what becomes the best model and what is exported; the
optimizer keeps training the raw weights. Its decay ramps up with the updates
(`min(decay, (1 + n) / (10 + n))`): an average over the random start would be worse than either.
Buffers (BatchNorm statistics) are copied, not averaged. It is registered with accelerate, so
every checkpoint holds it and `--resume` continues it exactly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, ok: torch.Tensor | bool = True) -> None:
        """Average in the weights after an optimizer step. `ok` is the guard's verdict: a skipped
        step (a device tensor, read without a host sync) leaves the average as it was."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        keep = torch.as_tensor(ok, dtype=torch.float32)
        for name, value in model.state_dict().items():
            avg = self.shadow[name]
            if value.dtype.is_floating_point:
                w = (1.0 - d) * keep.to(avg.device)
                avg.lerp_(value.detach().float(), w)
            else:  # counters such as BatchNorm's num_batches_tracked
                avg.copy_(value)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights inside the block, the trained ones after it."""
        state = model.state_dict()
        saved = {n: v.detach().clone() for n, v in state.items()}
        with torch.no_grad():
            for n, v in state.items():
                v.copy_(self.shadow[n].to(v.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, v in state.items():
                    v.copy_(saved[n])

    # accelerate's register_for_checkpointing saves and restores these with every checkpoint
    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for n, v in state["shadow"].items():
            self.shadow[n].copy_(v)
