"""`segkit inspect` on planted faults, on clean data, and on the real CamVid and ADE20K files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.config.recipe import Recipe
from segkit.data.audit import CELL, GRID_COLUMNS, PAD, format_report, inspect_main, inspect_recipe

NAMES = ["void", "road", "car", "tree"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


def make_folder(root: Path) -> Recipe:
    """Four clean 24x32 pairs per split, every class present in train."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for k in range(4):
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / split / f"{k}.png")
            mask = np.full((24, 32), 1, np.uint8)
            mask[:8, :8], mask[8:12, :], mask[0, 0] = 2, 3, 0
            Image.fromarray(mask).save(root / f"{split}annot" / f"{k}.png")
    recipe = Recipe()
    d = recipe.data
    d.format, d.path, d.images, d.masks, d.class_names = "folder", str(root), "{split}", "{split}annot", NAMES
    recipe.classes.select = ["car", "tree"]
    return recipe


def out_of_range(root: Path) -> str:
    mask = np.array(Image.open(root / "trainannot" / "1.png"))
    mask[5, 5] = 9
    Image.fromarray(mask).save(root / "trainannot" / "1.png")
    return "mask values outside"


def size_mismatch(root: Path) -> str:
    Image.fromarray(np.ones((20, 32), np.uint8)).save(root / "valannot" / "2.png")
    return "size mismatches"


def truncated(root: Path) -> str:
    data = (root / "train" / "3.png").read_bytes()
    (root / "train" / "3.png").write_bytes(data[: len(data) // 2])
    return "unreadable"


def class_absent(root: Path) -> str:
    for k in range(4):
        mask = np.array(Image.open(root / "trainannot" / f"{k}.png"))
        mask[mask == 2] = 1
        Image.fromarray(mask).save(root / "trainannot" / f"{k}.png")
    return "absent from every training image"


def check_png(path: Path, samples: int) -> None:
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.width == GRID_COLUMNS * (2 * CELL + PAD) + PAD
        assert img.height > ((samples + 1) // GRID_COLUMNS) * 24  # tiles plus a legend
        assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 10  # pictures, not a blank canvas


def test_clean_data_passes(tmp_path, capsys):
    recipe = make_folder(tmp_path / "data")
    assert inspect_main(recipe, tmp_path / "out") == 0
    text = capsys.readouterr().out
    assert "Split train: 4 samples" in text and "No fatal problems" in text
    check_png(tmp_path / "out" / "samples.png", 4)


@pytest.mark.parametrize("fault", [out_of_range, size_mismatch, truncated, class_absent])
def test_planted_faults_fail(tmp_path, capsys, fault):
    recipe = make_folder(tmp_path / "data")
    expected = fault(tmp_path / "data")
    assert inspect_main(recipe, tmp_path / "out") == 1
    text = capsys.readouterr().out
    assert "FATAL" in text and expected in text
    if fault is not class_absent:
        assert ".png" in text.split("FATAL", 1)[1]  # the offending file is named
    check_png(tmp_path / "out" / "samples.png", 3)


def test_unloadable_data_exits_with_a_message(tmp_path, capsys):
    recipe = make_folder(tmp_path / "data")
    recipe.data.path = str(tmp_path / "missing")
    assert inspect_main(recipe, tmp_path / "out") == 2
    assert "does not exist" in capsys.readouterr().out


def test_camvid_car_share_matches_a_direct_count(shared_data, tmp_path):
    recipe = Recipe()
    d = recipe.data
    d.format, d.path, d.images, d.masks = "folder", str(shared_data / "camvid"), "{split}", "{split}annot"
    d.class_names = "sky building pole road pavement tree sign_symbol fence car pedestrian bicyclist unlabelled".split()
    recipe.classes.select = ["car", "pedestrian", "bicyclist", "sign_symbol"]
    recipe.classes.max_eval_samples = 4  # only train is checked here; keep the run short
    report = inspect_recipe(recipe, tmp_path)
    counts = np.zeros(256, np.int64)
    for f in sorted((shared_data / "camvid" / "trainannot").glob("*.png")):
        counts += np.bincount(np.array(Image.open(f)).ravel(), minlength=256)
    train = report.splits["train"]
    car = report.labels.names.index("car")
    assert train.num_samples == 367
    assert train.stats.pixel_counts[car] == counts[8]
    assert train.stats.ignored_pixels == counts[11]
    assert train.stats.pixel_share(exclude_ignored=False)[car] == pytest.approx(counts[8] / counts.sum())
    assert train.stats.pixel_share(exclude_ignored=True)[car] == pytest.approx(counts[8] / (counts.sum() - counts[11]))
    assert round(100 * counts[8] / counts.sum(), 1) == 5.9
    assert round(100 * counts[8] / (counts.sum() - counts[11]), 1) == 6.1
    assert "car                             5.9%        6.1%" in format_report(report)
    assert not report.fatal


def test_ade20k_samples_load_with_ade_names(shared_data, tmp_path):
    recipe = Recipe()
    recipe.data.format, recipe.data.path = "ade20k", str(shared_data / "ade20k-samples")
    report = inspect_recipe(recipe, tmp_path)
    assert report.labels.names[:3] == ("wall", "building", "sky") and len(report.labels.names) == 150
    assert sum(s.num_samples for s in report.splits.values()) == 3
    text = format_report(report)
    assert "sky" in text and "windowpane" in text and not report.fatal
    assert (tmp_path / "samples.png").is_file()
