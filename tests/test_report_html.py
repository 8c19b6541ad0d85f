"""Per-image scores (per_image.csv, worst/) and report.html, checked on a real tiny run and in a
real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segkit.cli import main as cli
from segkit.evaluation.metrics import ConfusionMatrix, ImageTally, compute_metrics, image_scores
from segkit.evaluation.per_image import per_image_csv, read_per_image, worst_images
from segkit.labels import LabelSet

LABELS = LabelSet(names=("background", "circle", "square"), background=0)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]


def random_pairs(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        t = torch.randint(0, 3, (12, 10), generator=g)
        t[torch.rand(t.shape, generator=g) < 0.1] = 255
        p = torch.where(torch.rand(t.shape, generator=g) < 0.6, t.clamp(max=2), torch.randint(0, 3, t.shape, generator=g))
        pairs.append((p, t))
    return pairs


def test_image_tally_sums_to_the_split_and_scores_each_image_alone(monkeypatch):
    monkeypatch.setattr(ImageTally, "FLUSH_EVERY", 3)  # flushes mid-way and at the end
    split, alone = ConfusionMatrix(3), ConfusionMatrix(3)
    tally = ImageTally(split, LABELS)
    pairs = random_pairs(7)
    for i, (p, t) in enumerate(pairs):
        tally.update(10 + i, p, t)
        alone.update(p, t)
    assert torch.equal(split.matrix, alone.matrix)
    assert [r["index"] for r in tally.rows] == list(range(10, 17))
    p, t = pairs[4]
    one = ConfusionMatrix(3)
    one.update(p, t)
    ref = compute_metrics(one.matrix, LABELS)
    row = tally.rows[4]
    assert row["pixel_acc"] == pytest.approx(ref["strict"]["aAcc"])
    assert row["iou"] == pytest.approx({n: c["iou"] for n, c in ref["per_class"].items() if c["status"] == "present"})
    assert row["pixels"] == int((t != 255).sum())


def test_image_scores_name_the_largest_confusions_and_skip_absent_classes():
    m = np.array([[50, 0, 7], [12, 3, 0], [0, 0, 0]])
    s = image_scores(m, LABELS)
    assert s["confused"] == [("circle", "background", 12), ("background", "square", 7)]
    assert set(s["iou"]) == {"background", "circle", "square"}  # square is predicted: IoU 0
    assert s["iou"]["square"] == 0.0
    s = image_scores(np.diag([5, 0, 0]), LABELS)
    assert s["iou"] == {"background": 1.0} and s["confused"] == [] and s["mIoU"] == 1.0
    empty = image_scores(np.zeros((3, 3)), LABELS)
    assert empty["pixel_acc"] is None and empty["mIoU"] is None


def test_per_image_csv_round_trips_and_picks_the_worst():
    rows = [{"index": i, "pixels": 100, "pixel_acc": a, "mIoU": a, "iou": iou, "confused": c} for i, a, iou, c in [
        (0, 0.9, {"background": 0.9, "circle": 0.5}, [("circle", "background", 3)]),
        (1, 0.8, {"background": 0.8, "circle": 0.1, "square": 0.0}, []),
        (2, None, {}, []),
    ]]
    assert read_per_image(per_image_csv(rows, LABELS), LABELS) == rows  # 4 decimals hold these exactly
    worst = worst_images(rows, LABELS, k=1)
    assert worst == {"background": [1], "circle": [1], "square": [1]}


def test_run_writes_per_image_scores_that_add_up(finished_run: Path):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    labels = LabelSet.from_dict(metrics["labels"])
    rows = read_per_image((finished_run / "per_image.csv").read_text(), labels)
    assert [r["index"] for r in rows] == list(range(len(rows))) and len(rows) > 1
    assert sum(r["pixels"] for r in rows) == metrics["num_pixels"]
    hits = sum(r["pixel_acc"] * r["pixels"] for r in rows)
    assert hits / metrics["num_pixels"] == pytest.approx(metrics["strict"]["aAcc"], abs=1e-3)
    worst = {i for indices in worst_images(rows, labels).values() for i in indices}
    assert sorted(int(p.stem) for p in (finished_run / "worst").glob("*.png")) == sorted(worst)


def test_report_is_self_contained_and_rebuilt_by_the_cli(finished_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (run / "report.html").unlink()
    assert cli(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    # nothing to fetch: every src/href is inline (the SVG namespace is a name, not a request)
    assert not re.findall(r'(?:src|href)="(?!data:|#)', page)
    assert "<svg" in page and 'id="gallery"' in page and "recipe" in page.lower()
    for name in ("background", "circle", "square"):
        assert f"<h3>{name}</h3>" in page
    assert page.count("data:image/jpeg;base64,") >= len(list((run / "worst").glob("*.png")))
    (run / "metrics.json").unlink()
    assert cli(["report", str(run)]) == 2  # a clear error, not a traceback


def _browser():
    """Playwright on the OS's Chromium; a clear skip without them, a failure where CI says they
    must be there (SEGKIT_REQUIRE_BROWSER=1, set by .ci/run, which installs them)."""
    required = os.environ.get("SEGKIT_REQUIRE_BROWSER") == "1"
    if CHROMIUM is None:
        reason = "chromium is not installed (apt-get install -y chromium chromium-driver)"
        pytest.fail(reason) if required else pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright; it drives the OS's chromium)"
        pytest.fail(reason) if required else pytest.skip(reason)
    return sync_playwright()


def test_report_opens_in_headless_chromium(finished_run: Path, tmp_path: Path):
    """No console errors, the tables are there, every picture decodes, and the sort control
    reorders the gallery. SEGKIT_SCREENSHOT=PATH keeps the screenshot (docs/report.png)."""
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else errors.append(r.url))
            page.goto((finished_run / "report.html").as_uri(), wait_until="load")
            assert errors == []
            for table in ("per-class", "means", "mapping", "environment", "per-image"):
                assert page.locator(f"table.{table}").count() == 1, table
            assert page.locator("table.per-class tbody tr").count() == 3
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) > 3 and min(widths) > 0
            order = lambda: page.evaluate(  # noqa: E731
                "Array.from(document.querySelectorAll('#gallery .card')).map(c => +c.dataset.index)")
            worst_first = order()
            page.select_option("#sort", "index:asc")
            assert order() == sorted(worst_first) != worst_first
            page.select_option("#sort", "miou:asc")
            assert order() == worst_first
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("SEGKIT_SCREENSHOT"):
                shutil.copy(shot, os.environ["SEGKIT_SCREENSHOT"])
        finally:
            browser.close()
