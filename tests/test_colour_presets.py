"""The `cityscapes` and `camvid` colour presets (segkit/data/sources/colour_masks.py) against the
published tables: cityscapesScripts' labels.py in shared/data/formats, CamVid's label_colors.txt
(quoted below, as the dataset ships it), and the real CamVid colour masks in shared/data."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from segkit.config.sections import ClassesConfig, DataConfig
from segkit.data.classes import select_classes
from segkit.data.decode import read_label
from segkit.data.sources.colour_masks import CAMVID, CITYSCAPES, fold_shared_colours
from segkit.data.sources.hub_datasets import load_source

# CamVid's label_colors.txt, line for line ("r g b<TAB>name"), as distributed with the dataset
# (Brostow et al.). shared/data has no copy: its camvid/ holds SegNet's 11-class id masks.
CAMVID_LABEL_COLORS = """\
64 128 64\tAnimal
192 0 128\tArchway
0 128 192\tBicyclist
0 128 64\tBridge
128 0 0\t\tBuilding
64 0 128\tCar
64 0 192\tCartLuggagePram
192 128 64\tChild
192 192 128\tColumn_Pole
64 64 128\tFence
128 0 192\tLaneMkgsDriv
192 0 64\tLaneMkgsNonDriv
128 128 64\tMisc_Text
192 0 192\tMotorcycleScooter
128 64 64\tOtherMoving
64 192 128\tParkingBlock
64 64 0\t\tPedestrian
128 64 128\tRoad
128 128 192\tRoadShoulder
0 0 192\t\tSidewalk
192 128 128\tSignSymbol
128 128 128\tSky
64 128 192\tSUVPickupTruck
0 0 64\t\tTrafficCone
0 64 64\t\tTrafficLight
192 64 128\tTrain
128 128 0\tTree
192 128 192\tTruck_Bus
64 0 64\t\tTunnel
192 192 0\tVegetationMisc
0 0 0\t\tVoid
64 192 0\tWall
"""


def _label_colors(text: str) -> list[tuple[str, tuple[int, int, int]]]:
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return [(name, (int(r), int(g), int(b))) for r, g, b, name in rows]


def _cityscapes_labels_py(path: Path) -> list[tuple[str, int, tuple[int, int, int]]]:
    """(name, labelId, colour) of every `Label(...)` line of cityscapesScripts' labels.py."""
    rows = re.findall(r"Label\(\s*'([^']+)'\s*,\s*(-?\d+)\s*,[^\n]*\(\s*(\d+),\s*(\d+),\s*(\d+)\s*\)\s*\)",
                      path.read_text())
    return [(name, int(i), (int(r), int(g), int(b))) for name, i, r, g, b in rows]


def test_camvid_preset_is_label_colors_txt():
    published = _label_colors(CAMVID_LABEL_COLORS)
    assert len(published) == 32 and CAMVID == published
    names, palette, aliases = fold_shared_colours(CAMVID)
    assert names == {k: name for k, (name, _) in enumerate(published)} and aliases == {}  # id = line order
    assert names[30] == "Void" and palette[30] == (0, 0, 0)


def test_cityscapes_preset_is_labels_py(shared_data):
    published = _cityscapes_labels_py(shared_data / "formats/cityscapes/cityscapesScripts/cityscapesscripts"
                                      "/helpers/labels.py")
    assert len(published) == 35
    assert CITYSCAPES == [(name, colour) for name, _, colour in published]
    names, palette, aliases = fold_shared_colours(CITYSCAPES)
    first_with = {}
    for name, label_id, colour in published:
        first = first_with.setdefault(colour, label_id)
        if first == label_id:  # the id a mask of this colour means: the published labelId
            assert names[label_id] == name and palette[label_id] == colour
        else:  # a colour an earlier label already has: selectable by name, decoded as that label
            assert name in aliases[first] and label_id not in names
            if label_id >= 0:
                assert read_label(np.array([[colour]], dtype=np.uint8), "t", palette)[0, 0] == first


def _write_masks(root: Path, colours: list[tuple[int, int, int]]) -> Path:
    """One 4x4 image and one RGB mask per colour, under images/ and labels/."""
    for k, colour in enumerate(colours):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), 40 * k, dtype=np.uint8)).save(root / "images" / f"m{k}.png")
        mask = np.zeros((4, 4, 3), dtype=np.uint8)  # black: Cityscapes' unlabeled, CamVid's Void
        mask[:2] = colour
        Image.fromarray(mask).save(root / "labels" / f"m{k}.png")
    return root


def _decoded(cfg: DataConfig) -> tuple[dict[str, np.ndarray], object]:
    src = load_source(cfg)
    out = {}
    for ds in src.splits.values():
        for row in ds.cast_column("label", datasets.Image(decode=False)):
            out[Path(row["label"]["path"]).stem] = read_label(row["label"], row["label"]["path"], src.palette)
    return out, src


def test_cityscapes_preset_keeps_published_ids(tmp_path):
    # road, car, polegroup (pole's colour), license plate (car's colour), ego vehicle (black)
    colours = [(128, 64, 128), (0, 0, 142), (153, 153, 153), (119, 11, 32)]
    got, src = _decoded(DataConfig(format="colour_masks", path=str(_write_masks(tmp_path, colours)),
                                   palette="cityscapes", images="images", masks="labels", val_fraction=0))
    assert [int(got[f"m{k}"][0, 0]) for k in range(4)] == [7, 26, 17, 33]  # labels.py's labelIds
    assert all(int(m[3, 3]) == 0 for m in got.values())
    assert src.class_names[7] == "road" and src.class_names[26] == "car" and 1 not in src.class_names
    assert src.ignore_ids == [0]
    # by id as in labels.py, and by a folded name, which means the class that owns the colour
    by_id = select_classes(src, ClassesConfig(select=[7, 26], others="background"))
    assert by_id.labels.names == ("background", "road", "car") and by_id.lut[26] == 2 and by_id.lut[0] == 255
    by_alias = select_classes(src, ClassesConfig(select=["license plate", "polegroup"], others="ignore"))
    assert by_alias.lut[26] == 0 and by_alias.lut[17] == 1


def test_camvid_preset_ids_follow_label_colors_txt(tmp_path):
    colours = [(64, 128, 64), (64, 192, 0), (192, 0, 192), (64, 0, 128)]  # Animal, Wall, MotorcycleScooter, Car
    got, src = _decoded(DataConfig(format="colour_masks", path=str(_write_masks(tmp_path, colours)),
                                   palette="camvid", images="images", masks="labels", val_fraction=0))
    assert [int(got[f"m{k}"][0, 0]) for k in range(4)] == [0, 31, 13, 5]
    assert int(got["m0"][3, 3]) == 30 and src.class_names[30] == "Void" and src.ignore_ids == [30]


def test_camvid_preset_decodes_real_camvid_colour_masks(shared_data):
    """datumaro's CamVid fixture: CamVid's layout (train/ + trainannot/ ...) with RGB colour masks."""
    root = shared_data / "formats/indexed_png_misc/datumaro-common_semantic_segmentation/tests/assets/camvid_dataset"
    got, src = _decoded(DataConfig(format="colour_masks", path=str(root), palette="camvid",
                                   images="{split}", masks="{split}annot"))
    assert len(got) == 4  # every mask decoded: an unknown colour would have raised, naming it
    seen = {src.class_names[int(i)] for m in got.values() for i in np.unique(m)}
    assert seen == {"Animal", "Archway", "Bicyclist", "Bridge", "Child", "Road", "Sky", "Tree"}
