"""A full disk during a checkpoint, for real: a file-size limit (RLIMIT_FSIZE, what `ulimit -f`
sets) that the kernel enforces mid-write, and a small tmpfs where the next checkpoint cannot fit."""

from __future__ import annotations

import resource
import signal
import subprocess
from pathlib import Path

import pytest

import segkit.train.loop as loop
from segkit.config.recipe import load_recipe
from segkit.train.guard import RunStopped
from tests.faults.conftest import on_loss_call, tiny_recipe

TRAIN = {"max_steps": 15, "checkpoint_every": 5, "eval_every": 100, "keep_last": 10}


def limit_file_size_at_step(monkeypatch, step: int, limit: int) -> None:
    """From optimizer step `step` on, no file of this process may grow past `limit` bytes. SIGXFSZ
    is ignored, as a shell's `ulimit -f` job would have to, so writes fail with EFBIG instead."""
    def act(n: int, loss) -> None:
        if n == step:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    on_loss_call(monkeypatch, act)


@pytest.fixture
def restore_limits():
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_a_write_cut_by_the_file_size_limit_keeps_earlier_checkpoints(tmp_path: Path, monkeypatch, restore_limits):
    recipe, out = load_recipe(tiny_recipe(tmp_path, train=TRAIN)), tmp_path / "out"
    limit_file_size_at_step(monkeypatch, 6, 1_000_000)  # the weights alone are 1.8 MB
    with pytest.raises(RunStopped) as stopped:
        loop.train(recipe, out)
    message = str(stopped.value)
    print(message)
    assert "checkpoint step-0000010" in message and str(out / "checkpoints") in message
    assert "File too large" in message and "It needs about" in message and "is free" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000005"]  # no partial folder

    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    monkeypatch.undo()  # the real loss again, with no limit to plant
    result = loop.train(recipe, out, resume=True)  # --resume continues from the last good one
    assert result["status"] == "done"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000005", "step-0000010", "step-0000015"]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 9 MB tmpfs: one tiny-model checkpoint (about 5.6 MB) fits, a second does not."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size-limit test covers the write")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_checkpoint_that_will_not_fit_is_announced_and_refused(tmp_path: Path, small_disk: Path, capsys):
    recipe, out = load_recipe(tiny_recipe(tmp_path, train=TRAIN)), small_disk / "run"
    with pytest.raises(RunStopped) as stopped:
        loop.train(recipe, out)
    said = capsys.readouterr()
    assert "the next checkpoint needs about" in said.out + said.err and "will not fit" in said.out + said.err
    message = str(stopped.value)
    print(message)
    assert "Not writing checkpoint step-0000010" in message and "MB is free" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000005"]
