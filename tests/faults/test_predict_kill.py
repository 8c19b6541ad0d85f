"""`segkit predict` killed with SIGKILL at random points, 20 times over one folder, then resumed:
exactly one correct mask per readable image, CSVs that agree with them, exit 0 on a rerun.

Each kill is a real SIGKILL of a process running the CLI's `main`; the process is forked from this
one (torch and the model code already imported), so twenty of them take seconds, not minutes of
interpreter start-up, and the random kill times fall inside the work itself.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm as auto_tqdm

from segkit.cli import main as cli
from segkit.config.sections import InputSpec, ModelConfig
from segkit.labels import LabelSet
from segkit.models import build_model

READABLE = 10
KILLS = 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path, set[str], set[str]]:
    """A tiny random SegFormer saved to disk, and a folder of readable and broken images."""
    root = tmp_path_factory.mktemp("predict-kill")
    labels = LabelSet(("background", "circle", "square"), background=0)
    build_model(ModelConfig(family="segformer", size="tiny"), labels, spec=InputSpec("none")).save_pretrained(
        root / "model")
    images, rng = root / "images", np.random.default_rng(0)
    images.mkdir()
    for k in range(READABLE):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"{k:02d}.png")
    (images / "empty.png").write_bytes(b"")
    (images / "text.jpg").write_text("not a picture")
    return root / "model", images, {f"{k:02d}.png" for k in range(READABLE)}, {"empty.png", "text.jpg"}


def _predict(model: Path, images: Path, out: Path) -> list[str]:
    return ["predict", str(model), str(images), "--output", str(out), "--workers", "0", "--batch-size", "1"]


def _forked(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: the real CLI, then out without running the parent's cleanup
        os.environ["TQDM_DISABLE"] = "1"
        # tqdm's write lock is a multiprocessing lock that fork shares with the parent: a child
        # killed while holding it would leave the parent's next progress bar waiting for ever
        for bar in (std_tqdm, auto_tqdm):
            bar.set_lock(threading.RLock())
        code = 1
        try:
            code = cli(argv)
        finally:
            os._exit(code)
    return pid


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_kill_nine_twenty_times_then_resume(folder, tmp_path: Path, capsys):
    model, images, readable, broken = folder
    assert cli(_predict(model, images, tmp_path / "ref")) == 0  # the uninterrupted result
    started = time.perf_counter()
    os.waitpid(_forked(_predict(model, images, tmp_path / "timing")), 0)
    whole = time.perf_counter() - started

    out, rng, seen = tmp_path / "out", random.Random(0), []
    for _ in range(KILLS):
        pid = _forked(_predict(model, images, out))
        time.sleep(rng.uniform(0, whole))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.append(len(list((out / "masks").glob("*.png"))) if (out / "masks").is_dir() else 0)
        if (out / "masks").is_dir() and len(list((out / "masks").glob("*.png"))) == READABLE:
            for victim in rng.sample(sorted(readable), 2):  # keep the kills landing on real work
                (out / "masks" / victim).unlink()
    assert any(0 < n < READABLE for n in seen), seen  # some kills landed in the middle of the work
    capsys.readouterr()
    assert cli(_predict(model, images, out)) == 0

    masks = {p.name for p in (out / "masks").rglob("*") if p.is_file()}
    assert masks == readable  # no temporary file left, nothing for the broken ones
    assert not [p for p in (out / "overlays").rglob(".*")]
    for name in readable:
        assert np.array_equal(np.asarray(Image.open(out / "masks" / name)), np.asarray(Image.open(tmp_path / "ref/masks" / name)))
    areas = _rows(out / "areas.csv")
    assert sorted(r["image"] for r in areas) == sorted(readable)  # one row each, none twice
    for row in areas:
        ids = np.asarray(Image.open(out / "masks" / row["image"]))
        assert [int(row[f"{n} px"]) for n in ("background", "circle", "square")] == np.bincount(ids.ravel(), minlength=3).tolist()
    assert sorted(r["image"] for r in _rows(out / "failures.csv")) == sorted(broken)

    capsys.readouterr()
    assert cli(_predict(model, images, out)) == 0  # a rerun over the finished folder
    said = capsys.readouterr().out
    assert f"Nothing left to do: {READABLE} images already done; 2 unreadable" in said
    assert sorted(r["image"] for r in _rows(out / "failures.csv")) == sorted(broken)
