"""Rare-class sampling and the class-ratio crop, on planted data with hand-worked expectations."""

import math
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch

from segkit.data.augment import CatMaxRatioCrop
from segkit.data.sampling import RareClassSampler, image_weights

# ----------------------------------------------------------------------------- image weights


def planted_stats() -> SimpleNamespace:
    """Classes background, car, bike over 4 images (rows of `presence`).

    image 0: background only; 1: background + car; 2: background + car + bike; 3: car only.
    """
    presence = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    return SimpleNamespace(
        names=["background", "car", "bike"],
        pixel_counts=np.array([900, 80, 20], dtype=np.int64),
        image_counts=presence.sum(0).astype(np.int64),  # 3, 3, 1
        ignored_pixels=0,
        num_images=4,
        presence=presence,
    )


def test_image_weights_by_image_frequency():
    # f = 3/4, 3/4, 1/4 -> r = sqrt(4/3), sqrt(4/3), 2; background left out (r = 1).
    w = image_weights(planted_stats(), power=0.5, background=0)
    r = math.sqrt(4 / 3)
    raw = [1, r, 2, r]
    assert w.tolist() == pytest.approx([x / sum(raw) for x in raw])
    assert w[2] > w[1] == w[3] > w[0]  # the only image with a bike comes first


def test_image_weights_by_pixel_frequency():
    # f = .9, .08, .02; power 1 -> r = 1/.9, 12.5, 50.
    w = image_weights(planted_stats(), power=1.0, background=0, frequency="pixels")
    raw = [1, 12.5, 50, 12.5]
    assert w.tolist() == pytest.approx([x / sum(raw) for x in raw])
    # Without a background id, background counts as a class of rarity 1/.9.
    w = image_weights(planted_stats(), power=1.0, frequency="pixels")
    raw = [1 / 0.9, 12.5, 50, 12.5]
    assert w.tolist() == pytest.approx([x / sum(raw) for x in raw])


def test_image_weights_power_zero_is_uniform_and_bad_input_is_named():
    assert image_weights(planted_stats(), power=0.0).tolist() == pytest.approx([0.25] * 4)
    bad = planted_stats()
    bad.presence = bad.presence[:, :2]
    with pytest.raises(ValueError, match="presence"):
        image_weights(bad)
    with pytest.raises(ValueError, match="sampler_power"):
        image_weights(planted_stats(), power=-1)


# ----------------------------------------------------------------------------- sampler


def test_sampler_follows_its_weights():
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    n = 20_000
    draws = list(RareClassSampler(weights, num_samples=n, seed=3))
    assert len(draws) == n
    observed = np.bincount(draws, minlength=4)
    expected = weights * n
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001
    assert np.abs(observed / n - weights).max() < 0.015


def test_sampler_never_draws_zero_weight():
    draws = list(RareClassSampler(np.array([0.0, 1.0, 0.0, 1.0]), num_samples=500))
    assert set(draws) == {1, 3}


def test_sampler_is_deterministic_per_seed_and_epoch():
    weights = np.ones(50)
    a, b = RareClassSampler(weights, seed=7), RareClassSampler(weights, seed=7)
    assert len(a) == 50
    epoch0 = list(a)
    assert list(a) == epoch0  # iterating again without set_epoch repeats the epoch
    assert list(b) == epoch0  # a fresh sampler (a resumed run) draws the same
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0
    b.set_epoch(1)
    assert list(b) == epoch1
    a.set_epoch(0)
    assert list(a) == epoch0
    assert list(RareClassSampler(weights, seed=8)) != epoch0


def test_sampler_in_a_dataloader():
    sampler = RareClassSampler(np.array([1.0, 0.0, 0.0]), num_samples=6)
    batches = list(torch.utils.data.DataLoader(list(range(3)), batch_size=4, sampler=sampler))
    assert [b.tolist() for b in batches] == [[0, 0, 0, 0], [0, 0]]


def test_sampler_rejects_bad_weights():
    for bad in (np.array([]), np.array([0.0, 0.0]), np.array([1.0, -1.0]), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError, match="RareClassSampler"):
            RareClassSampler(bad)


# ----------------------------------------------------------------------------- crop

CROP = 32


def planted_scene(patch: int = 18) -> tuple[np.ndarray, np.ndarray]:
    """64x64 mask: class 0 everywhere, a `patch`-sized square of class 1, the top 8 rows 255.

    The image stores each pixel's row, column and label, so a crop shows where it came from.
    """
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[24 : 24 + patch, 24 : 24 + patch] = 1
    mask[:8] = 255
    rows, cols = np.mgrid[:64, :64]
    image = np.stack([rows, cols, mask], axis=-1).astype(np.uint8)
    return image, mask


def max_share(mask: np.ndarray) -> float:
    labelled = mask[mask != 255]
    return np.bincount(labelled).max() / labelled.size if labelled.size else 1.0


def crop_origin(image: np.ndarray) -> tuple[int, int]:
    return int(image[0, 0, 0]), int(image[0, 0, 1])


def assert_aligned(image: np.ndarray, mask: np.ndarray) -> None:
    y, x = crop_origin(image)
    rows, cols = np.mgrid[:CROP, :CROP]
    assert image.shape == (CROP, CROP, 3) and mask.shape == (CROP, CROP)
    assert np.array_equal(image[..., 0], y + rows) and np.array_equal(image[..., 1], x + cols)
    assert np.array_equal(image[..., 2], mask)


def test_crop_respects_the_ratio_when_it_can():
    image, mask = planted_scene()
    # Brute force over every position: some crops are valid, many are not.
    shares = [max_share(mask[y : y + CROP, x : x + CROP]) for y in range(33) for x in range(33)]
    valid = np.mean(np.array(shares) <= 0.75)
    assert 0.3 < valid < 0.6
    # With 30 tries a valid crop is missed with probability (1 - valid)^30 < 1e-6 per call.
    plain_violations = 0
    for seed in range(100):
        out = A.Compose([CatMaxRatioCrop(CROP, CROP, cat_max_ratio=0.75, max_tries=30)], seed=seed)(
            image=image, mask=mask
        )
        assert max_share(out["mask"]) <= 0.75
        assert_aligned(out["image"], out["mask"])
        plain = A.Compose([A.RandomCrop(CROP, CROP)], seed=seed)(image=image, mask=mask)
        plain_violations += max_share(plain["mask"]) > 0.75
    assert plain_violations > 20  # the constraint is doing the work, not the scene


def test_crop_leaves_255_out_of_the_share():
    # 32x64: left half = 24 columns of 255, 4 of class 0, 4 of class 1; right half all class 0.
    # A crop at column x holds 4 + x columns of class 0 and 4 of class 1 (x <= 24), so the
    # labelled share of class 0 is (4 + x) / (8 + x) <= 0.7 only for x <= 5. Were 255 counted
    # as a class, x = 0 and 1 would fail (255 covers 24/32 and 23/32 > 0.7).
    mask = np.zeros((32, 64), dtype=np.uint8)
    mask[:, :24] = 255
    mask[:, 28:32] = 1
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[..., 1] = np.arange(64)
    origins = []
    for seed in range(100):
        out = A.Compose([CatMaxRatioCrop(CROP, CROP, cat_max_ratio=0.7, max_tries=200)], seed=seed)(
            image=image, mask=mask
        )
        origins.append(int(out["image"][0, 0, 1]))
    assert set(origins) <= set(range(6))
    assert {0, 1} & set(origins)


def test_crop_falls_back_when_no_crop_is_valid():
    image, _ = planted_scene()
    mask = np.zeros((64, 64), dtype=np.uint8)  # one class everywhere: no valid crop exists
    image[..., 2] = mask
    out = A.Compose([CatMaxRatioCrop(CROP, CROP, cat_max_ratio=0.75)], seed=0)(image=image, mask=mask)
    assert_aligned(out["image"], out["mask"])


def test_crop_is_repeatable_with_a_seed():
    image, mask = planted_scene()

    def origins(seed: int) -> list[tuple[int, int]]:
        pipeline = A.Compose([CatMaxRatioCrop(CROP, CROP)], seed=seed)
        return [crop_origin(pipeline(image=image, mask=mask)["image"]) for _ in range(8)]

    first = origins(5)
    assert origins(5) == first
    # Reseeding a used pipeline (what the training loop does per item) repeats it too.
    pipeline = A.Compose([CatMaxRatioCrop(CROP, CROP)], seed=99)
    pipeline(image=image, mask=mask)
    pipeline.set_random_seed(5)
    assert [crop_origin(pipeline(image=image, mask=mask)["image"]) for _ in range(8)] == first
    assert len(set(first)) > 1  # successive calls move the crop
    assert origins(6) != first


def test_crop_after_padding_and_without_mask():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    mask = np.ones((20, 40), dtype=np.uint8)
    pipeline = A.Compose(
        [A.PadIfNeeded(CROP, CROP, fill=0, fill_mask=255), CatMaxRatioCrop(CROP, CROP)], seed=0
    )  # 255 is ignored by the loss and the metric
    out = pipeline(image=image, mask=mask)
    assert out["image"].shape == (CROP, CROP, 3) and out["mask"].shape == (CROP, CROP)
    only_image = A.Compose([CatMaxRatioCrop(16, 16)], seed=0)(image=image)
    assert only_image["image"].shape == (16, 16, 3)


def test_crop_larger_than_image_says_pad_first():
    image, mask = np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8)
    with pytest.raises(ValueError, match="PadIfNeeded"):
        A.Compose([CatMaxRatioCrop(CROP, CROP)])(image=image, mask=mask)
