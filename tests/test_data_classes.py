"""Class selection: names, ids, aliases, merges, others, ignore, typos; drop_empty and caps."""

import numpy as np
import pytest
from PIL import Image

from segkit.config.recipe import Recipe
from segkit.config.sections import ClassesConfig
from segkit.data import DataError, Source, build_data, select_classes
from segkit.data.sources.hub_datasets import ADE20K_NAMES, SIDEWALK_NAMES

CAMVID = "sky building pole road pavement tree sign_symbol fence car pedestrian bicyclist unlabelled".split()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


def camvid() -> Source:
    return Source({}, dict(enumerate(CAMVID)), [11], "camvid")


def sidewalk() -> Source:
    return Source({}, dict(enumerate(SIDEWALK_NAMES)), [0], "sidewalk")


def ade() -> Source:
    names = {0: "other"} | {i + 1: n.split(";")[0] for i, n in enumerate(ADE20K_NAMES)}
    aliases = {i + 1: n.split(";")[1:] for i, n in enumerate(ADE20K_NAMES)}
    return Source({}, names, [0], "ade20k", aliases)


def test_select_by_name_others_background_unlabeled_ignored():
    sel = select_classes(camvid(), ClassesConfig(select=["car", "Pedestrian"]))
    assert sel.labels.names == ("background", "car", "Pedestrian") and sel.labels.background == 0
    assert sel.lut.dtype == np.uint8 and len(sel.lut) == 12
    expected = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 255]
    assert sel.lut.tolist() == expected
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert sel.apply(mask).ravel().tolist() == expected
    assert sel.source_ids["car"] == [8] and 11 not in sel.source_ids["background"]


def test_others_ignore_has_no_background():
    sel = select_classes(camvid(), ClassesConfig(select=["car", "pedestrian"], others="ignore"))
    assert sel.labels.names == ("car", "pedestrian") and sel.labels.background is None
    assert sel.lut[8] == 0 and sel.lut[9] == 1
    assert (np.delete(sel.lut, [8, 9]) == 255).all()


def test_select_by_id_and_merge():
    sel = select_classes(camvid(), ClassesConfig(select=[8, {"vulnerable": ["pedestrian", 10]}]))
    assert sel.labels.names == ("background", "car", "vulnerable")
    assert sel.lut[9] == sel.lut[10] == 2
    as_dict = select_classes(sidewalk(), ClassesConfig(select={"vehicle": ["car", "truck", "bus"], "person": "person"}))
    assert as_dict.labels.names == ("background", "vehicle", "person")
    assert as_dict.source_ids["vehicle"] == [10, 11, 12] and as_dict.lut[8] == 2


def test_sidewalk_short_and_spaced_names():
    sel = select_classes(sidewalk(), ClassesConfig(select=["person", "car", "bicycle", "traffic sign"]))
    assert [sel.source_ids[n] for n in ("person", "car", "bicycle", "traffic sign")] == [[8], [10], [15], [26]]
    assert sel.lut[0] == 255  # unlabeled


def test_ade_aliases_and_ambiguity():
    sel = select_classes(ade(), ClassesConfig(select=["window", "Automobile", "traffic_light"]))
    assert sel.source_ids == {"background": sel.source_ids["background"], "window": [9], "Automobile": [21],
                              "traffic_light": [137]}
    assert len(sel.lut) == 151 and sel.lut[0] == 255
    assert select_classes(ade(), ClassesConfig(select=["stool"])).source_ids["stool"] == [111]  # a name beats an alias
    with pytest.raises(DataError, match="several classes"):
        select_classes(ade(), ClassesConfig(select=["ground"]))  # alias of earth and of land


def test_typo_suggests_the_closest_name():
    with pytest.raises(DataError, match="Did you mean 'pedestrian'"):
        select_classes(camvid(), ClassesConfig(select=["pedestrain"]))
    with pytest.raises(DataError, match="id 40 is not a source class"):
        select_classes(camvid(), ClassesConfig(select=[40]))


def test_empty_or_duplicate_selection_is_an_error():
    with pytest.raises(DataError, match="no classes left"):
        select_classes(camvid(), ClassesConfig(select=[]))
    with pytest.raises(DataError, match="more than once"):
        select_classes(camvid(), ClassesConfig(select=["car", 8]))


def test_select_null_keeps_all_but_ignored():
    sel = select_classes(camvid(), ClassesConfig())
    assert sel.labels.names == tuple(CAMVID[:11]) and sel.labels.background is None
    assert sel.lut[11] == 255 and sel.lut[:11].tolist() == list(range(11))


def test_explicit_ignore_replaces_the_default():
    sel = select_classes(camvid(), ClassesConfig(select=["car"], ignore=["tree", "unlabelled"]))
    assert sel.lut[5] == 255 and sel.lut[11] == 255 and sel.lut[3] == 0
    with pytest.raises(DataError, match="both selected"):
        select_classes(camvid(), ClassesConfig(select=["car"], ignore=["car"]))


def test_values_beyond_the_label_set_are_reported():
    sel = select_classes(camvid(), ClassesConfig(select=["car"]))
    with pytest.raises(DataError, match="mask values 12, 40"):
        sel.apply(np.array([[0, 12], [40, 8]], dtype=np.uint8))
    assert sel.apply(np.array([[255, 8]], dtype=np.uint8)).tolist() == [[255, 1]]  # 255 stays ignored
    wide = Source({}, {0: "bg", 300: "rare"}, [], "wide")
    sel = select_classes(wide, ClassesConfig(select=["rare"]))
    assert len(sel.lut) == 301
    assert sel.apply(np.array([[0, 300]], dtype=np.uint16)).tolist() == [[0, 1]]
    with pytest.raises(DataError, match="mask values 7"):
        sel.apply(np.array([[7]], dtype=np.uint16))  # inside the table, but not a class


def folder_recipe(root, classes: ClassesConfig) -> Recipe:
    """Eight 16x16 pairs; image k holds class 1 only when k is even."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for k in range(8):
            mask = np.zeros((16, 16), np.uint8)
            mask[:4, :4] = 1 if k % 2 == 0 else 2
            Image.new("RGB", (16, 16), (k * 20, 0, 0)).save(root / "images" / split / f"{k}.png")
            Image.fromarray(mask).save(root / "annotations" / split / f"{k}.png")
    recipe = Recipe()
    recipe.data.format, recipe.data.path, recipe.data.class_names = "folder", str(root), ["bg", "one", "two"]
    recipe.classes = classes
    recipe.augment.crop_size = 16
    return recipe


def test_drop_empty_keeps_images_with_a_chosen_class(tmp_path):
    recipe = folder_recipe(tmp_path, ClassesConfig(select=["one"], drop_empty=True))
    data = build_data(recipe, [0.5] * 3, [0.5] * 3)
    assert len(data.train) == 4
    assert all(data.train.raw(i)[1].max() == 1 for i in range(4))
    assert data.stats.num_images == 4 and data.stats.presence.shape == (4, 2)
    assert len(data.val) == 8  # evaluation data is never filtered


def test_caps_are_seeded_and_stats_match_the_kept_rows(tmp_path):
    recipe = folder_recipe(tmp_path, ClassesConfig(select=["one", "two"], max_samples=3, max_eval_samples=2))
    first = build_data(recipe, [0.5] * 3, [0.5] * 3)
    second = build_data(recipe, [0.5] * 3, [0.5] * 3)
    assert len(first.train) == 3 and len(first.val) == 2 and first.stats.num_images == 3
    images = lambda d: [np.asarray(d.train.raw(i)[0]).tobytes() for i in range(len(d.train))]  # noqa: E731
    assert images(first) == images(second)
    assert first.stats.pixel_counts[1:].sum() == 3 * 16
