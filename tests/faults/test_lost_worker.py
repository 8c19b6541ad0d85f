"""A DataLoader worker killed with SIGKILL mid-run (what the OOM killer does), for real: the
training process's own worker processes are killed from a hook on the loss at step 3."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import segkit.train.loop as loop
from segkit.config.recipe import load_recipe
from segkit.train.guard import RunStopped
from tests.faults.conftest import log_records, on_loss_call, tiny_recipe


def kill_workers_at_step(monkeypatch, step: int) -> None:
    def act(n: int, loss) -> None:
        if n == step:
            with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)

    on_loss_call(monkeypatch, act)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the worker processes")
def test_a_killed_worker_saves_a_checkpoint_and_names_memory(tmp_path: Path, monkeypatch):
    train = {"max_steps": 12, "num_workers": 1, "eval_every": 100, "checkpoint_every": 100}
    recipe, out = load_recipe(tiny_recipe(tmp_path, train=train)), tmp_path / "out"
    kill_workers_at_step(monkeypatch, 3)
    with pytest.raises(RunStopped) as stopped:
        loop.train(recipe, out)
    message = str(stopped.value)
    assert "worker was killed" in message and "memory" in message
    assert "train.num_workers (now 1)" in message and "train.batch_size (now 4)" in message
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert len(saved) == 1 and saved[0] in message  # one resumable checkpoint, named
    assert log_records(out)[-1]["reason"] == "worker_lost"
    monkeypatch.undo()
    assert loop.train(recipe, out, resume=True)["status"] == "done"
    assert (out / "checkpoints" / "step-0000012").is_dir()
