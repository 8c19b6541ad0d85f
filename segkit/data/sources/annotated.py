"""What every annotation-tool reader shares: find the images, rasterise once, cache, build a Source.

A reader (coco.py, cvat.py, label_studio.py, labelme.py) lists `Entry`s: one image, its split, and
a `render` function that paints its shapes (see rasterise.py) into a map of source ids. Here every
entry is rendered once into a single-channel PNG under `$SEGKIT_CACHE/rasterised/KEY/`, where KEY
hashes the export files (path, size, mtime), the reader's settings and `RASTER_VERSION`; later runs
read those PNGs, so epochs after the first, and the next run, cost what id PNGs cost.

Faults found while reading (a label not in the class list, a missing image, a degenerate polygon,
an RLE whose length does not match its box) are kept on the Source: `segkit inspect` lists them
all, and `load_source` refuses to train on fatal ones with the first few and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segkit.config.sections import DataConfig
from segkit.data.decode import IMAGE_EXTENSIONS
from segkit.data.errors import DataError
from segkit.data.source import SPLIT_ALIASES, Source, hold_out_val

RASTER_VERSION = 1
"""Bump when a rasterising rule changes, so cached masks are redrawn."""


@dataclass
class Faults:
    """Problems found in an export, each naming its file: fatal ones stop training."""

    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Entry:
    """One annotated image as a reader found it."""

    name: str
    """Image file name as the export writes it (for messages and output names)."""
    image: Path | None
    """The image on disk; None when it is missing (then the entry is skipped, as a fault)."""
    split: str
    height: int
    width: int
    render: Callable[[np.ndarray, Faults], None]
    """Paints the shapes, in draw order, into the (height, width) map of source ids (0 to start)."""


def split_of(name: str) -> str | None:
    """segkit split for a subset/file name (`Train`, `instances_val2017`, `validation`), else None."""
    low = name.lower()
    for ours, names in SPLIT_ALIASES.items():
        if any(n in low for n in names):
            return ours
    return None


class ImageIndex:
    """Finds an image an export refers to: as written relative to the roots, else by file name."""

    def __init__(self, *roots: Path) -> None:
        self.roots = list(dict.fromkeys(r.resolve() for r in roots if r.is_dir()))  # each root once
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, name: str, subset: str = "") -> Path | None:
        """As written under a root, its images/ or images/SUBSET (CVAT), else by file name if unique."""
        name = name.replace("\\", "/")
        for root in self.roots:
            for candidate in (root / name, root / "images" / subset / name, root / "images" / name, root / subset / name):
                if candidate.suffix.lower() in IMAGE_EXTENSIONS and candidate.is_file():
                    return candidate
        if self._by_name is None:
            self._by_name = {}
            for root in self.roots:
                for p in sorted(root.rglob("*")):
                    if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                        self._by_name.setdefault(p.name, []).append(p)
        found = self._by_name.get(Path(name).name, [])
        return found[0] if len(found) == 1 else None


def cache_key(cfg: DataConfig, files: list[Path], settings: dict) -> str:
    parts = [RASTER_VERSION, cfg.format, settings]
    for f in files:
        stat = f.stat()
        parts.append([str(f.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rasterised_dir(key: str) -> Path:
    """`$SEGKIT_CACHE/rasterised/KEY`, by default under `~/.cache/segkit`."""
    return Path(os.environ.get("SEGKIT_CACHE", Path.home() / ".cache" / "segkit")).expanduser() / "rasterised" / key


def save_label(label: np.ndarray, path: Path) -> None:
    """uint8 PNG, or 16-bit when a source id exceeds 255 (COCO ids stay below 255 in practice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if label.max(initial=0) > 255:
        Image.fromarray(label.astype(np.uint16)).save(path)
    else:
        Image.fromarray(label.astype(np.uint8)).save(path)


def build_source(cfg: DataConfig, entries: Callable[[Faults], list[Entry]], key: str, class_names: dict[int, str],
                 ignore_ids: list[int], name: str, aliases: dict[int, list[str]] | None = None) -> Source:
    """Render (or reuse) every entry's mask, then a Source of image/label file rows."""
    folder = rasterised_dir(key)
    done = folder / "rows.json"
    saved = json.loads(done.read_text()) if done.is_file() else None
    if saved is None or saved["fatal"]:  # an export with faults is re-read: its images or files may be fixed by now
        faults = Faults()
        listed = entries(faults)
        rows: list[dict] = []
        for i, e in enumerate(tqdm(listed, desc=f"rasterise {cfg.format}", unit="img", disable=None)):
            if e.image is None:
                faults.fatal.append(f"{e.name}: image referenced by the export but not found. Put the images "
                                    "where the export expects them (next to it, or in images/), or remove the entry.")
                continue
            label = np.zeros((e.height, e.width), dtype=np.int32)  # 0: pixels no shape covers
            e.render(label, faults)
            path = folder / e.split / f"{i:06d}.png"
            save_label(label, path)
            rows.append({"split": e.split, "image": str(e.image), "label": str(path), "name": e.name})
        saved = {"rows": rows, "fatal": faults.fatal, "warnings": faults.warnings}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "rows.json.tmp"
        tmp.write_text(json.dumps(saved))
        tmp.replace(done)  # written last and atomically: a half-rendered cache is never reused
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    by_split: dict[str, list[dict]] = {}
    for row in saved["rows"]:
        by_split.setdefault(row["split"], []).append(row)
    if "train" not in by_split and by_split:
        if len(by_split) == 1:
            by_split = {"train": next(iter(by_split.values()))}
        else:
            raise DataError(f"{cfg.path}: subsets {sorted(by_split)} hold no training split. Set data.splits, "
                            "e.g. {train: NAME}, to say which subset trains.")
    splits = {s: datasets.Dataset.from_dict({"image": [r["image"] for r in rs], "label": [r["label"] for r in rs]},
                                            features=features) for s, rs in by_split.items()}
    if not splits:
        fatal = "\n  ".join(saved["fatal"][:5])
        raise DataError(f"{cfg.path}: no annotated image could be read.{' Faults:' if fatal else ''}\n  {fatal}")
    splits = hold_out_val(splits, cfg.val_fraction, cfg.seed)
    return Source(splits, class_names, ignore_ids, name, aliases or {}, origin=f"{cfg.format}:{key}",
                  faults=list(saved["fatal"]), warnings=list(saved["warnings"]))


def assign_splits(entries: list[Entry], wanted: dict[str, str]) -> list[Entry]:
    """Subset names -> segkit splits: `data.splits` ({train: Train, val: Validation}) when given
    (entries of other subsets are left out), else by name (`instances_val2017` is val); a subset
    with no split name (CVAT's `default`) trains."""
    if not wanted:
        for e in entries:
            e.split = split_of(e.split) or "train"
        return entries
    back = {theirs.lower(): ours for ours, theirs in wanted.items()}
    kept = []
    for e in entries:
        ours = back.get(e.split.lower())
        if ours is not None:
            e.split = ours
            kept.append(e)
    return kept
