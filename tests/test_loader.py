"""The training loader as a GPU would be fed: uint8 on the wire, normalised on the device to the same
bits, persistent workers that still see every epoch, the worker count from the cores, and seeded
runs that repeat to the bit whatever the number of workers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segkit.cli import main as cli
from segkit.config.recipe import Recipe, recipe_from_dict
from segkit.config.sections import DataConfig
from segkit.data import build_data
from segkit.data.loaders import build_train_loader, eval_loader, loader_workers
from segkit.data.pixels import DeviceNormalise, hwc_to_chw_uint8
from tests.test_train import TINY, write_recipe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_device_normalisation_is_albumentations_to_the_bit():
    import albumentations as A

    image = np.random.default_rng(0).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    expected = A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0)(image=image)["image"]
    got = DeviceNormalise(MEAN, STD)(hwc_to_chw_uint8(image)[None])[0].permute(1, 2, 0).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    floats = torch.randn(1, 3, 4, 4)
    assert DeviceNormalise(MEAN, STD)(floats) is floats  # already normalised: untouched


def _data(samples: int = 12) -> object:
    recipe = Recipe()
    recipe.data = DataConfig(format="synthetic", synthetic_samples=samples, synthetic_size=48)
    recipe.augment.crop_size = 32
    recipe.train.batch_size = 2
    return recipe, build_data(recipe, MEAN, STD)


def _epochs(loader, sampler, epochs: int) -> list[torch.Tensor]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append(torch.cat([b["pixel_values"] for b in loader]))
    return out


def test_batches_are_uint8_and_persistent_workers_see_every_epoch():
    recipe, data = _data()
    recipe.train.num_workers = 0
    plain, _, plain_sampler = build_train_loader(data, recipe.train)
    recipe.train.num_workers = 2
    loader, _, sampler = build_train_loader(data, recipe.train)
    assert loader.persistent_workers and loader.prefetch_factor == recipe.train.prefetch_factor
    batch = next(iter(plain))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["labels"].dtype == torch.uint8
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 32, 32)

    expected = _epochs(plain, plain_sampler, 3)
    got = _epochs(loader, sampler, 2)
    workers = [w.pid for w in loader._iterator._workers]
    got += _epochs(loader, sampler, 3)[2:]
    assert [w.pid for w in loader._iterator._workers] == workers  # not re-forked
    for a, b in zip(expected, got):
        assert torch.equal(a, b)  # the epoch's crops, with or without (persistent) workers
    assert not torch.equal(expected[0], expected[1])


def test_pinning_is_passed_to_both_loaders():
    recipe, data = _data()
    recipe.train.num_workers = 0
    loader, _, _ = build_train_loader(data, recipe.train, pin_memory=True)
    assert loader.pin_memory
    assert eval_loader(data.val, 2, 0, pin_memory=True).pin_memory
    if torch.cuda.is_available():
        assert next(iter(loader))["pixel_values"].is_pinned()


def test_auto_workers_are_the_cores_per_process_less_one(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(32)), raising=False)
    assert loader_workers("auto", local_processes=4) == 7
    assert loader_workers("auto", local_processes=1) == 31
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert loader_workers("auto", local_processes=2) == 1  # at least one
    assert loader_workers(3) == 3
    assert recipe_from_dict(TINY).train.num_workers == 0
    assert Recipe().train.num_workers == "auto"
    bad = {**TINY, "train": {**TINY["train"], "num_workers": -1}}
    with pytest.raises(Exception, match="train.num_workers"):
        recipe_from_dict(bad)


@pytest.mark.slow
def test_seeded_runs_repeat_to_the_bit_with_any_number_of_workers(tmp_path):
    """Two epochs, an evaluation in each: 2 persistent workers twice, then none; the same weights."""
    weights = []
    for k, workers in enumerate((2, 2, 0)):
        (tmp_path / str(k)).mkdir()
        recipe = write_recipe(tmp_path / str(k), train={"max_steps": 12, "eval_every": 6, "num_workers": workers,
                                                        "tracker": "none", "num_overlays": 0})
        assert cli(["train", str(recipe), "--output-dir", str(tmp_path / str(k) / "out")]) == 0
        weights.append((tmp_path / str(k) / "out" / "model" / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
    a, c = load_file(str(tmp_path / "0/out/model/model.safetensors")), load_file(str(tmp_path / "2/out/model/model.safetensors"))
    assert all(torch.equal(a[n], c[n]) for n in a)
