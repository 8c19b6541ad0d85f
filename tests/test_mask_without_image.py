"""A mask without its image, in the formats whose masks are files (voc, cvat_mask, colour_masks):
refused by load_source like the shape formats' missing image, listed by `segkit inspect`. With
split lists (VOC's ImageSets), a mask that no list names is used by no split, and is not one."""

from __future__ import annotations

import pytest
import yaml

from segkit.cli import main as cli
from segkit.config.sections import DataConfig
from segkit.data.errors import DataError
from segkit.data.sources.hub_datasets import load_source
from tests.test_exports import WRITERS


@pytest.mark.parametrize("fmt, image", [("voc", "JPEGImages/v1.jpg"), ("cvat_mask", "JPEGImages/m2.jpg"),
                                        ("colour_masks", "images/f3.png")])
def test_mask_without_image_is_refused_and_named(fmt, image, tmp_path):
    write, extra, _ = WRITERS[fmt]
    root = write(tmp_path)
    cfg = DataConfig(format=fmt, path=str(root), **extra)
    assert not load_source(cfg).faults  # the fixture as written is clean
    (root / image).unlink()
    with pytest.raises(DataError) as e:
        load_source(cfg)
    stem = image.split("/")[1].split(".")[0]
    assert f"{stem}.png: mask without an image (no {stem}.* in" in str(e.value)
    assert "Run `segkit inspect`" in str(e.value)


def test_an_unlisted_mask_is_no_fault(tmp_path):
    write, _, _ = WRITERS["voc"]
    root = write(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text("v2\n")  # v3 is in no list now
    (root / "JPEGImages/v3.jpg").unlink()  # and its picture was left out of the export with it
    source = load_source(DataConfig(format="voc", path=str(root)))
    assert not source.faults and len(source.splits["val"]) == 1


def test_inspect_lists_the_mask_without_image(tmp_path, capsys):
    write, extra, chosen = WRITERS["colour_masks"]
    root = write(tmp_path)
    (root / "images/f1.png").unlink()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "data": {"format": "colour_masks", "path": str(root), **extra},
                                      "classes": {"select": chosen}}))
    assert cli(["inspect", str(recipe), "--output", str(tmp_path / "insp")]) == 1
    out = capsys.readouterr().out
    assert "FATAL export:" in out and "f1.png: mask without an image" in out
