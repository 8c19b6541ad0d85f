"""Augmentation keeps labels valid; workers get different crops; eval items keep label size."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segkit.config.recipe import Recipe
from segkit.config.sections import AugmentConfig, ClassesConfig, DataConfig
from segkit.data import (
    SegmentationDataset,
    build_data,
    build_transforms,
    eval_collate,
    load_source,
    make_synthetic,
    select_classes,
    train_collate,
    worker_init_fn,
)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def source():
    return load_source(DataConfig(format="synthetic", synthetic_samples=12, synthetic_size=48))


def dataset(source, aug: AugmentConfig, train: bool, classes: ClassesConfig, seed=0) -> SegmentationDataset:
    selection = select_classes(source, classes)
    split = "train" if train else "val"
    return SegmentationDataset(source.splits[split], selection, build_transforms(aug, MEAN, STD, train, seed), train, split)


def test_augmented_masks_hold_only_chosen_ids_and_255(source):
    aug = AugmentConfig(crop_size=40, scale=[0.5, 2.0], rotate=30, color_jitter=0.4, cat_max_ratio=1.0)
    ds = dataset(source, aug, True, ClassesConfig(select=["circle", "square"]))
    seen = set()
    for k in range(60):
        ds.reseed(k)
        item = ds[k % len(ds)]
        # uint8 on the wire, normalised on the device (segkit.data.pixels)
        assert item["pixel_values"].shape == (3, 40, 40) and item["pixel_values"].dtype == torch.uint8
        assert item["labels"].shape == (40, 40) and item["labels"].dtype == torch.uint8
        seen |= set(item["labels"].unique().tolist())
    assert seen <= {0, 1, 2, 255}
    assert {0, 1, 2, 255} <= seen  # pads and rotations did write 255, and the classes survived


def test_cat_max_ratio_uses_the_balanced_crop(source):
    aug = AugmentConfig(crop_size=24, cat_max_ratio=0.75)
    t = build_transforms(aug, MEAN, STD, train=True, seed=0)
    assert any(type(s).__name__ == "CatMaxRatioCrop" for s in t.transforms)
    item = dataset(source, aug, True, ClassesConfig())[0]
    assert item["labels"].shape == (24, 24)


def test_seeded_transform_repeats_and_reseed_changes_it(source):
    ds = dataset(source, AugmentConfig(crop_size=32, cat_max_ratio=1.0), True, ClassesConfig())
    ds.reseed(7)
    a = ds[0]["pixel_values"]
    ds.reseed(7)
    assert torch.equal(a, ds[0]["pixel_values"])
    ds.reseed(8)
    assert not torch.equal(a, ds[0]["pixel_values"])


def crops_per_worker(source, init) -> list[torch.Tensor]:
    same = make_synthetic(1, 48, seed=3).rename_column("annotation", "label")
    rows = same.select([0, 0])  # two identical rows: one per worker
    selection = select_classes(source, ClassesConfig())
    ds = SegmentationDataset(rows, selection, build_transforms(AugmentConfig(crop_size=24, cat_max_ratio=1.0), MEAN, STD, True, seed=0), True)
    loader = DataLoader(ds, batch_size=1, num_workers=2, worker_init_fn=init, collate_fn=train_collate)
    return [b["pixel_values"][0] for b in loader]


def test_workers_get_different_crops(source):
    torch.manual_seed(0)
    first, second = crops_per_worker(source, None)
    assert torch.equal(first, second)  # the albumentations problem this guards against
    first, second = crops_per_worker(source, worker_init_fn)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("mode,expected", [("resize", (3, 64, 64)), ("pad", (3, 64, 64)), ("none", (3, 48, 48))])
def test_eval_items_keep_label_size(source, mode, expected):
    aug = AugmentConfig(crop_size=32, eval_mode=mode, eval_size=64 if mode == "resize" else None)
    ds = dataset(source, aug, False, ClassesConfig(select=["triangle"]))
    item = ds[0]
    image, truth = ds.raw(0)
    assert item["pixel_values"].shape == expected
    assert item["labels"].shape == (48, 48) and image.size == (48, 48)
    assert np.array_equal(item["labels"].numpy(), truth)


def test_eval_collate_keeps_every_item_at_its_own_size():
    """Padding a batch to one size would change what the model sees (segkit.infer.segment batches
    same-shaped inputs itself), so evaluation batches are lists."""
    items = [{"pixel_values": torch.ones(3, 32, 64), "labels": torch.zeros(30, 60, dtype=torch.long), "index": 4},
             {"pixel_values": torch.ones(3, 64, 32), "labels": torch.ones(50, 20, dtype=torch.long), "index": 9}]
    batch = eval_collate(items)
    assert [tuple(x.shape) for x in batch["pixel_values"]] == [(3, 32, 64), (3, 64, 32)]
    assert [tuple(y.shape) for y in batch["labels"]] == [(30, 60), (50, 20)]
    assert batch["index"].tolist() == [4, 9]


def test_build_data_uses_test_when_there_is_no_val(tmp_path):
    rows = make_synthetic(4, 32, seed=0)
    for split in ("train", "test"):
        (tmp_path / f"images/{split}").mkdir(parents=True)
        (tmp_path / f"annotations/{split}").mkdir(parents=True)
        for k, r in enumerate(rows):
            r["image"].save(tmp_path / f"images/{split}/{k}.png")
            r["annotation"].save(tmp_path / f"annotations/{split}/{k}.png")
    recipe = Recipe()
    recipe.data = DataConfig(format="folder", path=str(tmp_path), val_fraction=0.0,
                             class_names=["background", "circle", "square", "triangle", "stripe"])
    recipe.augment.crop_size = 16
    data = build_data(recipe, MEAN, STD)
    assert data.val is data.test and len(data.val) == 4 and len(data.train) == 4
    assert data.labels.names[0] == "background" and data.stats.num_images == 4
    batch = train_collate([data.train[0], data.train[1]])
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["labels"].shape == (2, 16, 16)
