"""Disk space for checkpoints and exports: how much the next write needs, how much is free, and
the one message a failed write gives.

A checkpoint is the weights, the optimizer's moments and a few small files, so the previous
checkpoint's size is a close estimate of the next one; before the first, the tensors themselves
are counted. A write that fails (ENOSPC, a file-size limit, any OSError) removes its temporary
folder, and the message names the folder, the space needed and the space free.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import torch

from segkit.train.guard import RunStopped


class DiskWriteError(RunStopped):
    """A checkpoint, export or report could not be written; nothing partial was left behind."""


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def tensor_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of the weights and of the optimizer's state: what a checkpoint mostly holds. Before
    the first optimizer step AdamW has no moments yet; they will be twice the trainable weights."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if optimizer is None:
        return weights
    inner = getattr(optimizer, "optimizer", optimizer)
    moments = sum(v.numel() * v.element_size() for s in inner.state.values() for v in s.values()
                  if torch.is_tensor(v))
    if not inner.state:
        moments = 2 * sum(p.numel() * p.element_size() for g in inner.param_groups for p in g["params"])
    return weights + moments


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
FULL_WORDS = ("No space left", "File too large", "Disk quota", "os error 28", "os error 27", "os error 122")
"""How a full disk or a file-size limit reads in the errors of safetensors and torch.save, which
are not OSErrors."""


def write_failed(what: str, folder: Path, error: Exception, needed: int) -> DiskWriteError:
    """The message for a write that failed: what, where, why, needed and free, and what to do."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    reason = getattr(error, "strerror", None) or text
    full = getattr(error, "errno", None) in FULL_ERRNOS or any(w in str(error) for w in FULL_WORDS) \
        or free_bytes(folder) < needed
    fix = ("Free space there (or point --output-dir at a larger disk), then continue with --resume."
           if full else "Fix the folder (permissions, mount), then continue with --resume.")
    need = f"It needs about {human(needed)}; " if needed else ""
    if full and free_bytes(folder) >= needed:
        fix = "The disk has room: a file-size limit (ulimit -f) or a quota is the likely cause. " + fix
    return DiskWriteError(f"Could not write {what} into {folder}: {reason}. {need}{human(free_bytes(folder))} "
                          f"is free. Nothing partial was kept, and earlier checkpoints are intact. {fix}")


def not_enough_space(what: str, folder: Path, needed: int) -> DiskWriteError | None:
    """Checked before a write: the error to raise when `needed` bytes will clearly not fit."""
    free = free_bytes(folder)
    if free >= needed:
        return None
    return DiskWriteError(f"Not writing {what} into {folder}: it needs about {human(needed)} and only "
                          f"{human(free)} is free. Earlier checkpoints are intact. Free space there (or "
                          "lower train.keep_last), then continue with --resume.")
