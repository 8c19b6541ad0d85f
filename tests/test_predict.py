"""`segkit predict` on a folder tree of good images and every kind of bad file: outputs named after
inputs, indexed PNG masks with the palette, overlays, areas and failures CSVs, exit status,
resume and --overwrite; sliding windows against whole-image inference; memory on a huge image."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.cli import main as cli
from segkit.config.sections import InputSpec, ModelConfig
from segkit.labels import LabelSet
from segkit.models import build_model

rng = np.random.default_rng(0)
NAMES = ("background", "circle", "square")


def picture(h: int, w: int) -> np.ndarray:
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def plant(root: Path) -> dict[str, str]:
    """A tree of good and bad files. Returns relative path -> "ok" or the expected failure."""
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(picture(60, 90)).save(root / "a.jpg")
    Image.fromarray(picture(64, 64)).save(root / "a.png")  # same stem as a.jpg: both must survive
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8), "RGBA").save(root / "sub" / "rgba.png")
    Image.fromarray(picture(48, 40)).convert("CMYK").save(root / "sub" / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (30, 44), dtype=np.uint16)).save(root / "sub" / "grey16.png")
    Image.fromarray(picture(36, 36)).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "sub" / "palette.png")
    Image.fromarray(picture(4, 4)).save(root / "sub" / "deeper" / "tiny.png")
    rotated = Image.fromarray(picture(30, 50))  # stored 50 wide, 30 high; EXIF says: rotate to 30 x 50
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / "sub" / "exif.jpg", exif=exif)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not a picture")
    buffer = io.BytesIO()
    Image.fromarray(picture(80, 80)).save(buffer, format="PNG")
    (root / "sub" / "truncated.png").write_bytes(buffer.getvalue()[:300])
    (root / "readme.txt").write_text("not an image extension: never listed")
    return {"a.jpg": "ok", "a.png": "ok", "sub/rgba.png": "ok", "sub/cmyk.jpg": "ok", "sub/grey16.png": "ok",
            "sub/palette.png": "ok", "sub/deeper/tiny.png": "ok", "sub/exif.jpg": "ok",
            "empty.png": "empty file", "notes.jpg": "unreadable", "sub/truncated.png": "unreadable"}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_a_tree_with_bad_files(finished_run: Path, tmp_path: Path, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    expected = plant(images)
    assert cli(["predict", str(finished_run), str(images), "--output", str(out), "--batch-size", "3"]) == 0
    assert "8 images, 3 failed" in capsys.readouterr().out

    failures = {r["image"]: r["reason"] for r in rows(out / "failures.csv")}
    assert {k: v for k, v in expected.items() if v != "ok"}.keys() == failures.keys()
    for name, reason in failures.items():
        assert expected[name] in reason, (name, reason)

    areas = {r["image"]: r for r in rows(out / "areas.csv")}
    good = [k for k, v in expected.items() if v == "ok"]
    assert set(areas) == set(good)
    palette = LabelSet(NAMES, background=0).palette
    for name in good:
        with Image.open(images / name) as src:
            from PIL import ImageOps

            upright = ImageOps.exif_transpose(src)
            size = upright.size
        # a.jpg beside a.png: the outputs keep the whole name apart; the others take the stem
        out_name = Path("a.jpg.png") if name == "a.jpg" else Path(name).with_suffix(".png")
        with Image.open(out / "masks" / out_name) as mask:
            assert mask.mode == "P" and mask.size == size, name  # indexed, at the upright image's size
            ids = np.asarray(mask)
            assert set(np.unique(ids)) <= {0, 1, 2}
            colours = np.asarray(mask.getpalette()[:9]).reshape(3, 3)
            assert [tuple(c) for c in colours] == list(palette)  # the palette travels with the ids
        with Image.open(out / "overlays" / out_name) as ov:
            assert ov.width == size[0] and ov.height >= size[1]
        row = areas[name]
        assert (int(row["width"]), int(row["height"])) == size
        counts = [int(row[f"{n} px"]) for n in NAMES]
        assert counts == np.bincount(ids.ravel(), minlength=3).tolist()
        assert sum(float(row[f"{n} %"]) for n in NAMES) == pytest.approx(100.0, abs=1e-2)


def test_resume_skips_finished_images_and_overwrite_redoes_them(finished_run: Path, tmp_path: Path, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for k in range(3):
        Image.fromarray(picture(40, 40)).save(images / f"{k}.png")
    assert cli(["predict", str(finished_run), str(images), "--output", str(out), "--no-overlays"]) == 0
    assert not (out / "overlays").exists()
    (out / "masks" / "1.png").unlink()  # as if the run had died before finishing this image
    capsys.readouterr()
    assert cli(["predict", str(finished_run), str(images), "--output", str(out), "--no-overlays"]) == 0
    assert "Predicted 1 images, 2 already done" in capsys.readouterr().out
    assert sorted(r["image"] for r in rows(out / "areas.csv")) == ["0.png", "1.png", "2.png"]  # one row each
    assert cli(["predict", str(finished_run), str(images), "--output", str(out), "--no-overlays", "--overwrite"]) == 0
    assert sorted(r["image"] for r in rows(out / "areas.csv")) == ["0.png", "1.png", "2.png"]


def test_exit_status_is_an_error_only_when_readable_images_remain(finished_run: Path, tmp_path: Path, capsys):
    """Broken files alone are listed, not an error: predicting them again cannot help, and a
    scheduler that reruns a finished job must see success (tests/faults/ covers the kills)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    Image.fromarray(picture(20, 20)).save(bad / "ok.png")
    for _ in range(2):
        assert cli(["predict", str(finished_run), str(bad), "--output", str(tmp_path / "out")]) == 0
    assert "Nothing left to do: 1 images already done; 1 unreadable" in capsys.readouterr().out
    assert [r["image"] for r in rows(tmp_path / "out" / "failures.csv")] == ["x.png"]
    assert [r["image"] for r in rows(tmp_path / "out" / "areas.csv")] == ["ok.png"]


def test_inputs_files_folders_and_globs(finished_run: Path, tmp_path: Path):
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        Image.fromarray(picture(32, 32)).save(tmp_path / sub / "same.png")
        Image.fromarray(picture(32, 32)).save(tmp_path / sub / "other.jpg")
    out = tmp_path / "out"
    assert cli(["predict", str(finished_run), str(tmp_path / "one"), str(tmp_path / "two" / "same.png"),
                str(tmp_path / "two") + "/*.jpg", "--output", str(out), "--no-overlays"]) == 0
    # relative to the inputs' common folder, so equal names from two folders stay apart
    assert sorted(r["image"] for r in rows(out / "areas.csv")) == ["one/other.jpg", "one/same.png",
                                                                   "two/other.jpg", "two/same.png"]


def test_output_inside_an_input_is_refused(finished_run: Path, tmp_path: Path, capsys):
    Image.fromarray(picture(32, 32)).save(tmp_path / "a.png")
    assert cli(["predict", str(finished_run), str(tmp_path), "--output", str(tmp_path / "pred")]) == 2
    assert "inside the input folder" in capsys.readouterr().err


LABELS = LabelSet(NAMES, background=0)


@pytest.mark.parametrize("family", ["segformer", "vit"])
def test_sliding_windows_on_an_image_that_fits_are_whole_image_inference(family: str):
    from segkit.infer.segment import segment_images
    from segkit.infer.sliding import sliding_mask

    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, size="tiny", head="linear"), LABELS,
                        spec=InputSpec("none", window=(64, 96))).eval()
    image = Image.fromarray(picture(56, 88))
    assert np.array_equal(sliding_mask(model, image, (64, 96)), segment_images(model, [image])[0])


def test_sliding_windows_blend_overlaps_and_cover_every_pixel():
    from segkit.infer.sliding import blend_weights, sliding_mask, starts

    assert starts(100, 40, 0.25) == [0, 30, 60] and starts(30, 40, 0.25) == [0]
    w = blend_weights(8, 8)
    assert w[4, 4] > w[0, 0] > 0
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="segformer", size="tiny"), LABELS, spec=InputSpec("none")).eval()
    image = Image.fromarray(picture(150, 230))
    mask = sliding_mask(model, image, (64, 64), overlap=0.5, batch=3)
    assert mask.shape == (150, 230) and set(np.unique(mask)) <= {0, 1, 2}


MEMORY_CHECK = textwrap.dedent("""
    import resource, sys, numpy as np, torch
    from PIL import Image
    from segkit.config.sections import InputSpec, ModelConfig
    from segkit.labels import LabelSet
    from segkit.models import build_model
    from segkit.infer.sliding import sliding_mask
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="segformer", size="tiny"), LabelSet(("background", "a", "b"), 0),
                        spec=InputSpec("none", window=(512, 512))).eval()
    side = int(sys.argv[1])
    image = Image.new("RGB", (side, side), (90, 120, 60))
    mask = sliding_mask(model, image, (512, 512), overlap=0.0, batch=4)
    assert mask.shape == (side, side)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


@pytest.mark.slow
def test_a_huge_image_predicts_in_bounded_memory(tmp_path: Path):
    """A 10,000 x 10,000 px picture: the picture itself is 300 MB and its mask 100 MB; the scores
    of a whole image would be 1.2 GB (3 classes, float32). Peak RSS stays under 1.5 GB. (No
    overlap keeps the run short; overlap changes the number of windows, not the memory.)"""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_CHECK)
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script), "10000"], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.strip().splitlines()[-1])
    assert peak_mb < 1500, f"peak RSS {peak_mb} MB"


def test_flip_test_time_augmentation_is_mirror_symmetric(finished_run: Path, tmp_path: Path):
    """With --flip, the scores of an image and of its mirror image are averaged: so predicting the
    mirrored picture gives exactly the mirrored mask."""
    images = tmp_path / "images"
    images.mkdir()
    array = picture(48, 70)
    Image.fromarray(array).save(images / "a.png")
    Image.fromarray(array[:, ::-1].copy()).save(images / "b.png")
    out = tmp_path / "out"
    assert cli(["predict", str(finished_run), str(images), "--output", str(out), "--flip", "--no-overlays"]) == 0
    with Image.open(out / "masks" / "a.png") as a, Image.open(out / "masks" / "b.png") as b:
        assert np.array_equal(np.asarray(a)[:, ::-1], np.asarray(b))
