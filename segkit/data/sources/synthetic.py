"""A generated dataset in the Hub schema, for the offline quickstart and the tests.

Each image is a textured background with one to four shapes. The classes are easy to learn because
each has its own colour family and texture, yet positions, sizes, tints and overlaps vary:

    id 0 background  grey noise with soft waves
    id 1 circle      red, speckled
    id 2 square      green, checkered
    id 3 triangle    blue, diagonal lines
    id 4 stripe      yellow band across the image, horizontal lines

About half the circles and squares get a 1-2 pixel ring of 255 (ignored) around them in the label,
like the uncertain borders of Pascal VOC masks, so every consumer meets ignored pixels early. The
picture is not changed there.

`make_synthetic` returns rows with `image` and `annotation` Image columns, exactly like
`scene_parse_150`; the same seed and split give the same bytes.
"""

from __future__ import annotations

import zlib

import datasets
import numpy as np
from PIL import Image

from segkit.config.sections import DataConfig
from segkit.data.source import Source
from segkit.labels import IGNORE_INDEX

CLASS_NAMES = ("background", "circle", "square", "triangle", "stripe")
_COLOURS = np.array([(0, 0, 0), (200, 60, 50), (60, 175, 70), (55, 80, 205), (215, 195, 55)], dtype=np.float32)


def make_synthetic(num_samples: int, size: int = 128, seed: int = 0, split: str = "train") -> datasets.Dataset:
    """`num_samples` images of `size`² with their label maps, in the Hub schema (image, annotation)."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    images, labels = [], []
    for _ in range(num_samples):
        image, label = _sample(rng, size)
        images.append(Image.fromarray(image))
        labels.append(Image.fromarray(label))
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "annotation": labels}, features=features)


def synthetic_source(cfg: DataConfig) -> Source:
    """train/val/test as a Source; val and test are a quarter of train each, with their own seeds."""
    n, size, seed = cfg.synthetic_samples, cfg.synthetic_size, cfg.seed
    splits = {
        split: make_synthetic(count, size, seed, split).rename_column("annotation", "label")
        for split, count in (("train", n), ("val", max(1, n // 4)), ("test", max(1, n // 4)))
    }
    # Background is a real class here (id 0), not "unlabeled": nothing is ignored by default.
    return Source(splits, dict(enumerate(CLASS_NAMES)), [], "synthetic",
                  origin=f"synthetic:{n}:{size}:{seed}")


def _sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = _background(rng, yy, xx, size)
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(rng.integers(1, 5)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        inside, ring = _shape(rng, cls, yy, xx, size)
        tint = _COLOURS[cls] + rng.normal(0, 14, 3)
        texture = _texture(rng, cls, yy, xx)
        image[inside] = np.clip(tint * texture[inside, None], 0, 255)
        label[inside] = cls
        if ring is not None:
            label[ring] = IGNORE_INDEX  # uncertain border: ignored by the loss and the metric
    return image.astype(np.uint8), label


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    base = rng.uniform(90, 150)
    freq = rng.uniform(1, 4) * 2 * np.pi / size
    waves = 18 * np.sin(freq * xx + rng.uniform(0, 6)) * np.cos(freq * yy + rng.uniform(0, 6))
    grey = base + waves + rng.normal(0, 10, yy.shape)
    tint = rng.normal(0, 6, 3)
    return np.clip(grey[..., None] + tint, 0, 255).astype(np.float32)


def _texture(rng: np.random.Generator, cls: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Brightness multiplier around 1 whose pattern depends on the class."""
    noise = rng.normal(0, 0.06, yy.shape)
    if cls == 1:
        pattern = 0.15 * (rng.random(yy.shape) < 0.08)  # speckles
    elif cls == 2:
        pattern = 0.12 * (((yy // 6) + (xx // 6)) % 2)  # checks
    elif cls == 3:
        pattern = 0.12 * (((yy + xx) // 4) % 2)  # diagonals
    else:
        pattern = 0.12 * ((yy // 3) % 2)  # horizontal lines
    return (0.92 + pattern + noise).astype(np.float32)


def _shape(rng: np.random.Generator, cls: int, yy: np.ndarray, xx: np.ndarray,
           size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels inside a random shape of `cls`, and an optional ignored ring around it."""
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    r = rng.uniform(0.08, 0.22) * size
    ring_width = float(rng.choice([0.0, 1.0, 2.0], p=[0.5, 0.25, 0.25]))
    if cls == 1:
        dist = np.hypot(yy - cy, xx - cx) - r
    elif cls == 2:
        dist = np.maximum(np.abs(yy - cy), np.abs(xx - cx)) - r
    elif cls == 3:
        angle = rng.uniform(0, 2 * np.pi)
        normals = [angle + k * 2 * np.pi / 3 for k in range(3)]
        # inside an equilateral triangle = behind all three edge half-planes
        dist = np.max([(xx - cx) * np.cos(a) + (yy - cy) * np.sin(a) - r / 2 for a in normals], axis=0)
        ring_width = 0.0
    else:
        angle = rng.uniform(0, np.pi)
        dist = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle)) - rng.uniform(3, 8)
        ring_width = 0.0
    inside = dist <= 0
    ring = (dist > 0) & (dist <= ring_width) if ring_width else None
    return inside, ring
