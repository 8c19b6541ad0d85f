"""Run by tests/test_distributed.py, once in-process and once under `accelerate launch` with 2
processes: MaskFormer's and Mask2Former's set loss on one global batch of 4 images, each process
taking its own 4 / N. Writes {family: loss} (the mean over processes, as the trainer logs it).

Not a test module (no `test_` prefix): pytest does not collect it.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

from segkit.config.sections import ModelConfig
from segkit.labels import LabelSet
from segkit.models import build_model

LABELS = LabelSet(("background", "circle", "square"), background=0)
BATCH = 4


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 3, 64, 64, generator=g)
    labels = torch.zeros(BATCH, 64, 64, dtype=torch.long)
    labels[:, 8:30, 8:30] = 1
    labels[1:3, 34:60, 30:62] = 2  # images hold 2, 3, 3 and 2 masks: the processes count differently
    labels[0, :4] = 255
    return images, labels


@contextmanager
def same_points() -> Iterator[None]:
    """Mask2Former samples its loss points with torch.rand, per mask and per image; one process and
    two would draw different points. Every draw here is one fixed set of points, repeated for each
    mask, so both runs score the same points and only the normalisation can differ."""
    rand = torch.rand

    def fixed(*size, **kwargs):
        size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
        kwargs.pop("generator", None)
        points = rand(size[-2:], generator=torch.Generator().manual_seed(1), **kwargs)
        return points.expand(size).contiguous()

    torch.rand = fixed
    try:
        yield
    finally:
        torch.rand = rand


def losses(rank: int, world: int) -> dict[str, float]:
    images, labels = global_batch()
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    out = {}
    for family in ("maskformer", "mask2former"):
        torch.manual_seed(0)
        # eval mode: no dropout, and BatchNorm's running statistics do not depend on the batch split
        model = build_model(ModelConfig(family=family, size="tiny", checkpoint=None), LABELS).eval()
        with same_points(), torch.no_grad():
            loss = model(images[share], labels=labels[share]).loss
        if world > 1:
            torch.distributed.all_reduce(loss)
            loss = loss / world  # the mean over processes, as `accelerator.reduce(loss, "mean")` logs it
        out[family] = float(loss)
    return out


def main(path: str) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=True)  # the process group `accelerate launch` set up, as segkit train uses it
    result = losses(state.process_index, state.num_processes)
    if state.is_main_process:
        with open(path, "w") as f:
            json.dump(result, f)
    state.wait_for_everyone()


if __name__ == "__main__":
    from segkit.processes import leave

    main(sys.argv[1])
    sys.exit(leave(0))  # as `segkit` does: freeing gloo's process group can deadlock (segkit/processes.py)
