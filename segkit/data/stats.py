"""Per-class pixel and image counts of a split, after class selection; computed once and cached.

Counting takes one `np.bincount` of source ids per mask; the selection's table then folds the
source histogram into training classes, so no pixel is remapped on the way. Class weights for the
loss and the rare-class sampler read these statistics; `segkit inspect` prints them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from segkit.data.classes import Selection
from segkit.data.decode import location, read_label, undecoded
from segkit.data.errors import DataError
from segkit.run_folder import write_json

STATS_VERSION = 1
"""Bump when the counting changes, so old cache files are not read back."""


@dataclass
class ClassStats:
    """Pixel and image counts per training class (255 pixels counted apart, as ignored)."""

    names: list[str]
    pixel_counts: np.ndarray
    """(C,) int64: labelled pixels per training id."""
    image_counts: np.ndarray
    """(C,) int64: images containing the class."""
    ignored_pixels: int
    num_images: int
    presence: np.ndarray
    """(N, C) bool: the classes each sample of the split contains, by row (the rare sampler's input)."""

    def pixel_share(self, exclude_ignored: bool = True) -> np.ndarray:
        """(C,) share of labelled pixels, or of all pixels (ignored ones included) when False."""
        total = int(self.pixel_counts.sum()) + (0 if exclude_ignored else self.ignored_pixels)
        return self.pixel_counts / total if total else np.zeros(len(self.names))

    def to_dict(self) -> dict[str, Any]:
        # presence is packed to bits: ADE20K's 20k x 151 booleans fit in about 0.5 MB of JSON
        packed = np.packbits(self.presence.astype(bool), axis=None)
        return {
            "version": STATS_VERSION,
            "names": list(self.names),
            "pixel_counts": self.pixel_counts.tolist(),
            "image_counts": self.image_counts.tolist(),
            "ignored_pixels": int(self.ignored_pixels),
            "num_images": int(self.num_images),
            "presence_shape": list(self.presence.shape),
            "presence_bits": base64.b64encode(packed.tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassStats":
        shape = tuple(d["presence_shape"])
        bits = np.frombuffer(base64.b64decode(d["presence_bits"]), dtype=np.uint8)
        presence = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)
        return cls(list(d["names"]), np.asarray(d["pixel_counts"], dtype=np.int64),
                   np.asarray(d["image_counts"], dtype=np.int64), int(d["ignored_pixels"]),
                   int(d["num_images"]), presence)


class StatsCounter:
    """Accumulates ClassStats one mask at a time (the audit feeds it too)."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        c = selection.labels.num_classes
        self.pixels = np.zeros(c, dtype=np.int64)
        self.images = np.zeros(c, dtype=np.int64)
        self.ignored = 0
        self.rows: list[np.ndarray] = []

    def add(self, source_ids: np.ndarray) -> list[int]:
        """Count one mask of source ids; returns the ids in it that are not source classes."""
        hist = np.bincount(source_ids.ravel(), minlength=256)
        per_class, ignored, unknown = self.selection.count(hist)
        self.pixels += per_class
        self.images += per_class > 0
        self.ignored += ignored
        self.rows.append(per_class > 0)
        return unknown

    def add_missing(self) -> None:
        """Keep `presence` aligned with row numbers when a mask could not be read."""
        self.rows.append(np.zeros(self.selection.labels.num_classes, dtype=bool))

    def result(self) -> ClassStats:
        c = self.selection.labels.num_classes
        presence = np.stack(self.rows) if self.rows else np.zeros((0, c), dtype=bool)
        return ClassStats(list(self.selection.labels.names), self.pixels.copy(), self.images.copy(),
                          self.ignored, len(self.rows), presence)


def compute_stats(dataset: datasets.Dataset | datasets.IterableDataset, selection: Selection, *,
                  palette: list[tuple[int, int, int]] | None = None, split: str = "train",
                  limit: int | None = None, progress: bool = True) -> ClassStats:
    """One pass over the masks of `dataset` (images are not decoded). `limit` caps streamed rows."""
    rows = undecoded(dataset).select_columns(["label"])
    if limit is not None and isinstance(rows, datasets.IterableDataset):
        rows = rows.take(limit)
    total = len(rows) if isinstance(rows, datasets.Dataset) else limit
    counter = StatsCounter(selection)
    bar = tqdm(rows, total=total, desc=f"class statistics ({split})", unit="mask", disable=not progress or None)
    for i, row in enumerate(bar):
        where = location(row["label"], split, i)
        unknown = counter.add(read_label(row["label"], where, palette))
        if unknown:
            raise DataError(f"{where}: mask values {unknown[:10]} are not classes of the source. "
                            "Run `segkit inspect` for every such file, then fix the masks or data.class_names.")
    return counter.result()


def cache_dir() -> Path:
    """`$SEGKIT_CACHE/stats`, by default `~/.cache/segkit/stats`."""
    return Path(os.environ.get("SEGKIT_CACHE", Path.home() / ".cache" / "segkit")).expanduser() / "stats"


def stats_key(dataset: datasets.Dataset, selection: Selection, origin: str, split: str) -> str:
    """Hash of what the counts depend on: the rows, the masks on disk and the selection."""
    parts: list[Any] = [STATS_VERSION, origin, split, len(dataset), dataset._fingerprint,
                        selection.lut.tobytes().hex(), list(selection.labels.names), list(selection.unknown_ids)]
    labels = undecoded(dataset).select_columns(["label"])
    first = labels[0]["label"] if len(labels) else None
    # Folder sources store paths, not bytes: an edited mask must invalidate the cache. Rows that
    # embed their bytes are covered by the fingerprint (and reading them all here would be slow).
    by_path = isinstance(first, dict) and not first.get("bytes") and first.get("path")
    for p in (v["path"] for v in labels["label"]) if by_path else ():
        try:
            st = os.stat(p)
            parts.append((st.st_size, st.st_mtime_ns))
        except OSError:
            parts.append(None)
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def cached_stats(dataset: datasets.Dataset, selection: Selection, *, origin: str, split: str = "train",
                 palette: list[tuple[int, int, int]] | None = None, progress: bool = True) -> ClassStats:
    """`compute_stats`, computed once per dataset and selection and kept as JSON in `cache_dir()`."""
    path = cache_dir() / f"{stats_key(dataset, selection, origin, split)}.json"
    if path.is_file():
        try:
            return ClassStats.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError):
            pass  # a damaged cache file is recomputed, never trusted
    stats = compute_stats(dataset, selection, palette=palette, split=split, progress=progress)
    store_stats(path, stats)
    return stats


def store_stats(path: Path, stats: ClassStats) -> None:
    """Atomically: a crash never leaves half a cache entry."""
    write_json(path, stats.to_dict(), indent=None)
