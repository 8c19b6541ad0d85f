"""Broken files in the middle of an unaudited dataset, for real: rows whose image bytes are not a
picture, in a local parquet repo that `segkit inspect` was never run on, read whole and streamed
(`data.streaming: true`).

A stream is the case that matters (it cannot be audited up front), and the one datasets 5 makes
hard: it decodes a streamed split's Image columns inside any map added before a later
`cast_column(decode=False)`, so the source undecodes a stream at load (segkit.data.decode.undecoded)
and segkit's own reader is the one that meets the broken row."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import segkit.data.dataset as dataset
import segkit.data.source as source
import segkit.train.loop as loop
from segkit.cli import main as cli
from segkit.config.recipe import load_recipe
from tests.faults.conftest import tiny_recipe
from tests.faults.test_non_finite import plant_nan

BROKEN = (3, 9)


def png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def stream_with_broken_rows(root: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    images = [png(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    for k in BROKEN:
        images[k] = {"bytes": b"\x89PNG\r\n\x1a\n cut off by a failed upload", "path": f"broken-{k}.png"}
    labels = [png(rng.integers(0, 4, (32, 32), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    for split, rows in (("train", slice(0, n)), ("validation", slice(n, n + 4))):
        (root / split).mkdir(parents=True)
        good = [png(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
        columns = {"image": images[rows] if split == "train" else good,
                   "label": labels[rows] if split == "train" else labels[:4]}
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(root / split / "0000.parquet"))
    return root


def recipe(tmp_path: Path, hub: Path, streaming: bool = False, **train) -> Path:
    data = {"format": "hub", "path": str(hub), "streaming": streaming, "class_names": ["bg", "a", "b", "c"],
            "max_skipped": train.pop("max_skipped", 5)}
    return tiny_recipe(tmp_path, data=data, classes={"select": ["a", "b"]},
                       augment={"crop_size": 32, "scale": [1.0, 1.0]},
                       train={"max_steps": 10, "batch_size": 2, "sampler": "uniform", "eval_every": 100, "checkpoint_every": 100, **train})


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(source, "STREAM_VAL_ROWS", 4)  # a local stream does not report its size
    # the class statistics read the stream's first rows; the broken ones come later, as in a long stream
    monkeypatch.setattr(dataset, "STREAM_STATS_ROWS", 3)
    # datasets sleeps 5 s whenever a parquet stream is left before its end (the statistics' and
    # val's first rows), to let pyarrow's threads close (apache/arrow#45214); a 16-row file needs less
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.05)
    return stream_with_broken_rows(tmp_path / "hub")


def skipped_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "skipped.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(params=[False, True], ids=["read", "streamed"])
def streaming(request) -> bool:
    return request.param


def test_broken_rows_are_skipped_listed_and_counted(tmp_path: Path, hub: Path, streaming: bool):
    out = tmp_path / "out"
    assert cli(["train", str(recipe(tmp_path, hub, streaming)), "--output-dir", str(out)]) == 0
    rows = skipped_rows(out)
    assert rows and all("unreadable" in r["reason"] for r in rows)
    # the row's file name (`broken-3.png`): segkit's reader met it, not the datasets iterator
    assert {r["reason"].split(" ")[0] for r in rows} <= {"broken-3.png", "broken-9.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_samples"] == len(rows)
    assert json.loads((out / "checkpoints/step-0000010/trainer_state.json").read_text())["skipped"] == len(rows)


def test_skips_past_the_limit_stop_the_run_with_the_list(tmp_path: Path, hub: Path, streaming: bool, capsys):
    out = tmp_path / "out"
    assert cli(["train", str(recipe(tmp_path, hub, streaming, max_skipped=1)), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "data.max_skipped: 2 training samples could not be read, more than 1" in err
    assert "skipped.csv" in err and "unreadable" in err
    assert len(skipped_rows(out)) == 2


def test_resume_meets_the_same_skips_and_ends_with_the_same_weights(tmp_path: Path, hub: Path, streaming: bool,
                                                                   monkeypatch):
    r = load_recipe(recipe(tmp_path, hub, streaming))
    assert loop.train(r, tmp_path / "full")["status"] == "done"
    plant_nan(monkeypatch, set(), interrupt_after=6)  # a real SIGINT during step 6
    assert loop.train(r, tmp_path / "cut")["status"] == "interrupted"
    monkeypatch.undo()
    monkeypatch.setattr(source, "STREAM_VAL_ROWS", 4)
    monkeypatch.setattr(dataset, "STREAM_STATS_ROWS", 3)
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.05)
    assert loop.train(r, tmp_path / "cut", resume=True)["status"] == "done"
    where = [[r["step"], r["epoch"], r["index"]] for r in skipped_rows(tmp_path / "full")]
    assert where and [[r["step"], r["epoch"], r["index"]] for r in skipped_rows(tmp_path / "cut")] == where
    a = load_file(str(tmp_path / "full/checkpoints/step-0000010/model.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/step-0000010/model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
