"""Every source format, built locally in the exact schemas it is read in; odd image files."""

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from segkit.config.sections import DataConfig
from segkit.data import DataError, load_source, make_synthetic
from segkit.data.decode import read_image, read_label, to_rgb
from segkit.data.sources.hub_datasets import ADE20K_NAMES, SIDEWALK_NAMES

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


def png(arr: np.ndarray, mode: str | None = None) -> Image.Image:
    return Image.fromarray(arr, mode) if mode else Image.fromarray(arr)


def hub_parquet(root: Path, split: str, n: int, image_col: str, label_col: str, max_id: int) -> None:
    """Rows with the Hub's Image features, written the way the parquet branch stores them."""
    features = datasets.Features({image_col: datasets.Image(), label_col: datasets.Image()})
    rows = {image_col: [png(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)) for _ in range(n)],
            label_col: [png(rng.integers(0, max_id + 1, (12, 16), dtype=np.uint8)) for _ in range(n)]}
    (root / split).mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / split / "0000.parquet"))


def test_ade20k_preset_reads_the_parquet_branch_layout(tmp_path):
    hub_parquet(tmp_path / "scene_parsing", "train", 6, "image", "annotation", 150)
    hub_parquet(tmp_path / "scene_parsing", "validation", 3, "image", "annotation", 150)
    src = load_source(DataConfig(format="ade20k", path=str(tmp_path)))
    assert set(src.splits) == {"train", "val"}
    assert len(src.splits["train"]) == 6 and len(src.splits["val"]) == 3
    assert src.splits["train"].column_names == ["image", "label"]
    assert src.class_names[0] == "other" and src.ignore_ids == [0]
    assert src.class_names[9] == "windowpane" and "window" in src.aliases[9]
    assert len(src.class_names) == 151 and len(ADE20K_NAMES) == 150
    label = read_label(src.splits["train"][0]["label"], "row")
    assert label.ndim == 2 and label.shape == (12, 16)


def test_ade20k_offline_failure_names_the_alternatives():
    with pytest.raises(DataError, match="ADEChallengeData2016"):
        load_source(DataConfig(format="ade20k"))


def test_sidewalk_preset_splits_train_with_a_seed(tmp_path):
    hub_parquet(tmp_path, "train", 20, "pixel_values", "label", 34)
    cfg = DataConfig(format="sidewalk", path=str(tmp_path), val_fraction=0.25, seed=3)
    src = load_source(cfg)
    assert len(src.splits["train"]) == 15 and len(src.splits["val"]) == 5
    assert src.splits["val"].column_names == ["image", "label"]
    assert src.class_names[26] == "object-trafficsign" and len(SIDEWALK_NAMES) == 35
    again = load_source(cfg)
    val_bytes = lambda s: [r["image"] for r in s.splits["val"].cast_column("image", datasets.Image(decode=False))]  # noqa: E731
    assert val_bytes(src) == val_bytes(again)


def test_hub_format_detects_columns_and_reads_id2label(tmp_path):
    hub_parquet(tmp_path, "train", 4, "img", "mask", 2)
    hub_parquet(tmp_path, "test", 2, "img", "mask", 2)
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "unlabeled", "1": "cat", "2": "dog"}))
    src = load_source(DataConfig(format="hub", path=str(tmp_path), val_fraction=0.25))
    assert set(src.splits) == {"train", "val", "test"}
    assert src.class_names == {0: "unlabeled", 1: "cat", 2: "dog"} and src.ignore_ids == [0]
    named = load_source(DataConfig(format="hub", path=str(tmp_path), class_names=["bg", "a", "b"]))
    assert named.class_names[1] == "a" and named.ignore_ids == []
    with pytest.raises(DataError, match="data.label_column"):
        load_source(DataConfig(format="hub", path=str(tmp_path), label_column="nope"))


def test_streaming_holds_out_the_first_rows(tmp_path, monkeypatch):
    import segkit.data.source as source

    hub_parquet(tmp_path, "train", 10, "image", "label", 3)
    monkeypatch.setattr(source, "STREAM_VAL_ROWS", 3)  # a local stream does not report its size
    cfg = DataConfig(format="hub", path=str(tmp_path), streaming=True, class_names=["a", "b", "c", "d"])
    src = load_source(cfg)
    assert isinstance(src.splits["train"], datasets.IterableDataset)
    val, train = list(src.splits["val"]), list(src.splits["train"])
    assert len(val) == 3 and len(train) == 7
    first = next(iter(datasets.load_dataset(str(tmp_path), streaming=True)["train"]))
    # a stream's rows stay undecoded ({bytes, path}): segkit's reader decodes them (decode.undecoded)
    assert isinstance(val[0]["image"], dict)
    assert np.array_equal(np.array(read_image(val[0]["image"], "val row 0")), np.array(first["image"]))


def test_disk_format_reads_save_to_disk(tmp_path):
    ds = make_synthetic(6, 32, seed=1)
    datasets.DatasetDict({"train": ds, "validation": make_synthetic(2, 32, seed=2)}).save_to_disk(str(tmp_path / "dd"))
    src = load_source(DataConfig(format="disk", path=str(tmp_path / "dd"), class_names=["bg", "a", "b", "c", "d"]))
    assert len(src.splits["train"]) == 6 and len(src.splits["val"]) == 2
    ds.save_to_disk(str(tmp_path / "single"))
    single = load_source(DataConfig(format="disk", path=str(tmp_path / "single"), class_names=["bg", "a", "b", "c", "d"]))
    assert len(single.splits["train"]) + len(single.splits["val"]) == 6
    with pytest.raises(DataError, match="does not exist"):
        load_source(DataConfig(format="disk", path=str(tmp_path / "missing")))


def test_synthetic_is_deterministic_and_in_the_hub_schema():
    a, b = make_synthetic(8, 64, seed=5), make_synthetic(8, 64, seed=5)
    assert a.column_names == ["image", "annotation"]
    assert isinstance(a.features["annotation"], datasets.Image)
    assert all(np.array_equal(np.array(x["image"]), np.array(y["image"])) for x, y in zip(a, b))
    values = np.unique(np.concatenate([np.array(r["annotation"]).ravel() for r in a]))
    assert set(values.tolist()) <= {0, 1, 2, 3, 4, 255} and 255 in values
    src = load_source(DataConfig(format="synthetic", synthetic_samples=8, synthetic_size=32))
    assert [len(src.splits[s]) for s in ("train", "val", "test")] == [8, 2, 2]


def write_folder(root: Path, split: str, stems: list[str], exts: list[str], mask_fn) -> None:
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for stem, ext in zip(stems, exts):
        png(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(root / "images" / split / f"{stem}{ext}")
        mask_fn().save(root / "annotations" / split / f"{stem}.png")


def test_folder_pairs_mixed_extensions_and_detects_splits(tmp_path):
    ids = lambda: png(rng.integers(0, 3, (10, 14), dtype=np.uint8))  # noqa: E731
    write_folder(tmp_path, "training", ["a", "b", "c"], [".jpg", ".png", ".webp"], ids)
    write_folder(tmp_path, "validation", ["d"], [".tiff"], ids)
    src = load_source(DataConfig(format="folder", path=str(tmp_path), class_names=["void", "x", "y"]))
    assert len(src.splits["train"]) == 3 and len(src.splits["val"]) == 1 and src.ignore_ids == [0]
    row = src.splits["train"].cast_column("image", datasets.Image(decode=False))[0]
    assert row["image"]["path"].endswith("a.jpg")
    (tmp_path / "annotations" / "training" / "b.png").unlink()
    with pytest.raises(DataError, match="have no mask"):
        load_source(DataConfig(format="folder", path=str(tmp_path), class_names=["void", "x", "y"]))


def test_folder_rgb_masks_through_a_palette(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    colours = np.array(palette, dtype=np.uint8)
    truth = rng.integers(0, 3, (10, 14))
    write_folder(tmp_path, "train", ["a"], [".png"], lambda: png(colours[truth]))
    cfg = DataConfig(format="folder", path=str(tmp_path), class_names=["bg", "red", "green"], palette=palette)
    src = load_source(cfg)
    assert np.array_equal(read_label(src.splits["train"][0]["label"], "a", src.palette), truth)
    bad = colours[truth].copy()
    bad[0, 0] = (1, 2, 3)
    with pytest.raises(DataError, match=r"colour \(1, 2, 3\).*not in data.palette"):
        read_label(png(bad), "a.png", src.palette)
    with pytest.raises(DataError, match="data.palette"):
        read_label(png(colours[truth]), "a.png", None)


def test_folder_list_files_and_voc_stem_lists(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Masks").mkdir()
    for stem in "pqrs":
        png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "JPEGImages" / f"{stem}.jpg")
        png(rng.integers(0, 2, (8, 8), dtype=np.uint8)).save(tmp_path / "Masks" / f"{stem}.png")
    (tmp_path / "train.txt").write_text("p\nq\nr\n")
    (tmp_path / "val.txt").write_text("s\n")
    cfg = DataConfig(format="folder", path=str(tmp_path), images="JPEGImages", masks="Masks",
                     splits={"train": "train.txt", "val": "val.txt"}, class_names=["bg", "fg"])
    src = load_source(cfg)
    assert len(src.splits["train"]) == 3 and len(src.splits["val"]) == 1
    (tmp_path / "imgs.txt").write_text("JPEGImages/p.jpg\nJPEGImages/q\n")
    listed = load_source(DataConfig(format="folder", path=str(tmp_path), images="imgs.txt", masks="Masks",
                                    class_names=["bg", "fg"], val_fraction=0.5))
    assert len(listed.splits["train"]) == 1 and len(listed.splits["val"]) == 1


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_source(DataConfig(format="folder", path=str(tmp_path / "nowhere"), class_names=["a"]))
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="class names"):
        load_source(DataConfig(format="folder", path=str(tmp_path)))


def encoded(img: Image.Image, fmt: str, **kw) -> dict:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return {"bytes": buf.getvalue(), "path": f"x.{fmt.lower()}"}


def test_images_in_odd_modes_read_as_rgb():
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    rgba = np.dstack([base, np.full((6, 8), 255, np.uint8)])
    assert np.array_equal(np.array(read_image(encoded(png(rgba, "RGBA"), "PNG"), "x")), base)
    cmyk = read_image(encoded(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "JPEG"), "x")
    assert cmyk.mode == "RGB" and np.abs(np.array(cmyk)[0, 0].astype(int) - [255, 0, 0]).max() < 8
    pal = png(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert np.array_equal(np.array(read_image(encoded(pal, "PNG"), "x")), np.array(pal.convert("RGB")))
    sixteen = png(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.array(read_image(encoded(sixteen, "PNG"), "x"))[0, :, 0].tolist() == [0, 128, 255]
    grey = read_image(encoded(png(base[..., 0]), "PNG"), "x")
    assert np.array_equal(np.array(grey)[..., 2], base[..., 0])


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = read_image(encoded(img, "JPEG", exif=exif.tobytes(), quality=95), "x")
    assert upright.size == (20, 40)
    assert np.array(upright)[2, 10, 0] > 200  # the left edge is now on top
    with Image.open(io.BytesIO(encoded(img, "PNG")["bytes"])) as f:
        kept = to_rgb(f)
    assert np.array(kept).shape == (20, 40, 3)  # still usable after the file is closed


def test_masks_keep_ids_palette_indices_and_16_bit():
    ids = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    p_mask = png(ids, "L").convert("P")
    p_mask.putpalette([v for i in range(256) for v in (i * 7 % 256, 0, 0)])
    assert np.array_equal(read_label(encoded(p_mask, "PNG"), "m"), ids)
    wide = np.array([[0, 300], [1000, 2]], dtype=np.uint16)
    out = read_label(encoded(png(wide), "PNG"), "m")
    assert out.tolist() == wide.tolist()


def test_corrupt_and_truncated_files_are_named(tmp_path):
    good = encoded(png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")["bytes"]
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    for name in ("cut.png", "junk.jpg"):
        with pytest.raises(DataError, match=name):
            read_image({"bytes": None, "path": str(tmp_path / name)}, str(tmp_path / name))
