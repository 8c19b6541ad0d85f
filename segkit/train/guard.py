"""The non-finite guard: a step whose loss or gradient norm is NaN or inf changes no weight.

fp16 overflow, a learning rate too high or a label bug first shows as one non-finite loss; an
optimizer step on it turns every weight into NaN, and every checkpoint after holds NaN. The guard
skips that step (the step still counts against the budget and the schedule, so a resumed run
stays aligned), counts it, and stops the run after `train.max_bad_steps` bad steps in a row.

No host sync is added on a GPU: the verdict stays a device tensor. The fused AdamW kernel takes it
as `found_inf` and skips the update itself (as torch's GradScaler does), and the loop reads the
verdicts in one go where logging already syncs (`drain`), or before a checkpoint. On the CPU a
tensor read is no device sync, so the step is simply not called.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

LIKELY_CAUSES = ("the learning rate is too high (lower train.lr or add train.warmup_steps)",
                 "fp16 overflow (train.mixed_precision: bf16 or no)",
                 "labels outside the class range or a broken sample (run `segkit inspect` on the recipe)")


class RunStopped(RuntimeError):
    """The run cannot go on; the message says why, what was kept, and what to try."""


@dataclass
class StepGuard:
    """Verdicts of the steps not yet read on the host, and the counts read so far."""

    max_bad_steps: int
    total: int = 0
    """Bad (skipped) optimizer steps of the whole run, resumed runs included."""
    in_a_row: int = 0
    """Bad steps since the last good one."""
    check_grad_norm: bool = True
    """False under fp16 loss scaling: the scaler skips overflowing gradients itself, often at the
    start while it calibrates, and those are no fault."""
    _micro: torch.Tensor | None = None
    _pending: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    _buffers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def before_forward(self, model: torch.nn.Module) -> None:
        """Copy the buffers (BatchNorm's running statistics) at the start of a step: a forward that
        overflows writes NaN into them, and skipping the optimizer step would not undo that."""
        if self._micro is None:
            self._buffers = [(b, b.detach().clone()) for b in model.buffers()]

    def restore_buffers(self, ok: torch.Tensor) -> None:
        """Put the copies back unless the step was good, on the device (torch.where: no sync)."""
        with torch.no_grad():
            for buffer, old in self._buffers:
                buffer.copy_(torch.where(ok.to(buffer.device), buffer, old))
        self._buffers = []

    def add_loss(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss: a NaN in any of them poisons the accumulated gradients."""
        ok = torch.isfinite(loss.detach()).all()
        self._micro = ok if self._micro is None else self._micro & ok

    def verdict(self, grad_norm: torch.Tensor | None) -> torch.Tensor:
        """A device bool for this optimizer step: True when it may change the weights."""
        ok = self._micro if self._micro is not None else torch.tensor(True)
        self._micro = None
        if grad_norm is not None and self.check_grad_norm:
            ok = ok & torch.isfinite(grad_norm)
        return ok

    def record(self, step: int, ok: torch.Tensor) -> None:
        self._pending.append((step, ok))

    def drain(self) -> list[int]:
        """Read the pending verdicts (one transfer) and update the counts; returns the bad steps."""
        if not self._pending:
            return []
        steps = [s for s, _ in self._pending]
        oks = torch.stack([ok.reshape(()) for _, ok in self._pending]).cpu().tolist()
        self._pending.clear()
        bad = []
        for step, ok in zip(steps, oks):
            if ok:
                self.in_a_row = 0
            else:
                self.total, self.in_a_row = self.total + 1, self.in_a_row + 1
                bad.append(step)
        return bad

    @property
    def exhausted(self) -> bool:
        return self.in_a_row >= self.max_bad_steps


def step_if_finite(optimizer: torch.optim.Optimizer, ok: torch.Tensor, scaled: bool) -> None:
    """`optimizer.step()` unless `ok` is False, without reading `ok` on the host on a GPU.

    `scaled`: fp16 loss scaling is on; its scaler skips non-finite gradients itself (and owns
    `found_inf`), and a non-finite loss always gives non-finite gradients.
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    if scaled:
        optimizer.step()
    elif ok.device.type != "cpu" and inner.defaults.get("fused"):
        inner.found_inf = (~ok).float()  # the fused kernel skips the update and its step count
        try:
            optimizer.step()
        finally:
            del inner.found_inf
    elif bool(ok):  # a CPU tensor, or an optimizer without the fused kernel (then one sync)
        optimizer.step()


def all_finite(model: torch.nn.Module) -> bool:
    """Every weight and buffer finite: checked before a checkpoint or an export is written."""
    tensors = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def halt_message(step: int, in_a_row: int, last_good: str | None) -> str:
    return (f"Stopped at step {step}: {in_a_row} optimizer steps in a row had a non-finite loss or gradient "
            f"(each was skipped; no weight is NaN). {what_is_kept(last_good)}")


def what_is_kept(last_good: str | None) -> str:
    """The last good checkpoint and the likely causes: the end of every non-finite message."""
    kept = (f"The last good checkpoint is {last_good}: resume from it with --resume {last_good} after "
            "fixing the cause." if last_good else "No checkpoint was written before this point.")
    causes = "".join(f"\n  - {c}" for c in LIKELY_CAUSES)
    return f"{kept}\nLikely causes:{causes}"
