"""What `segkit predict` writes, named after each input's relative path:

    OUT/
      masks/REL.png      (REL: the input's path relative to the inputs' common folder, suffix .png)
                         class ids as an indexed PNG with the label set's palette embedded: it opens
                         in colour in any viewer, and np.asarray(Image.open(...)) gives the ids
      overlays/REL.png   the picture with the classes tinted and a legend of those it shows
      areas.csv          per image: size, then each class's area in pixels and in %
      failures.csv       per skipped file: why

Both CSV files are appended and flushed image by image, so a crash loses nothing done; a second run
skips the images that areas.csv lists and whose outputs exist. Masks and overlays are written under
a temporary name and renamed, so a run killed mid-write (kill -9) leaves no half mask that counts
as done; the next run first makes the CSVs agree with the files (`reconcile`): one areas row per
finished image, no failures row for an image it will try again, no leftover temporary files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.evaluation.overlays import blend, legend
from segkit.infer.predict.inputs import InputImage
from segkit.labels import LabelSet
from segkit.run_folder import atomic_write, write_text

OVERLAY_MAX_SIDE = 4096
"""Overlays are for looking: a 10,000 px one is unwieldy, so they are shrunk to this (masks never are)."""


class PredictFolder:
    """The output folder's layout and its two running CSV files."""

    def __init__(self, root: Path, labels: LabelSet, part: str = "") -> None:
        self.root, self.labels = Path(root), labels
        self.masks, self.overlays = self.root / "masks", self.root / "overlays"
        self.areas = self.root / f"areas{part}.csv"
        self.failures = self.root / f"failures{part}.csv"

    def mask_path(self, item: InputImage) -> Path:
        return self.masks / item.out

    def overlay_path(self, item: InputImage) -> Path:
        return self.overlays / item.out

    def area_header(self) -> list[str]:
        names = self.labels.names
        return ["image", "width", "height"] + [f"{n} px" for n in names] + [f"{n} %" for n in names]

    def done(self, items: list[InputImage], overlays: bool) -> set[Path]:
        """Inputs finished by an earlier run: listed in areas.csv, with their files on disk."""
        listed = set()
        for table in self.root.glob("areas*.csv"):
            with open(table, newline="") as f:
                listed |= {row["image"] for row in csv.DictReader(f)}
        return {it.rel for it in items if str(it.rel) in listed and self.mask_path(it).is_file()
                and (not overlays or self.overlay_path(it).is_file())}

    def failed(self) -> set[str]:
        """Inputs that failures.csv (and its per-process parts) list."""
        listed: set[str] = set()
        for table in self.root.glob("failures*.csv"):
            with open(table, newline="") as f:
                listed |= {row["image"] for row in csv.DictReader(f) if row.get("image")}
        return listed

    def reconcile(self, done: set[Path], retry: set[Path]) -> None:
        """Make the tables agree with the files after a killed run, before anything is appended.

        areas.csv keeps one row (the last) per image in `done`, and the rows of per-process parts
        a killed `accelerate launch` run left are folded in; failures.csv drops the images this run
        tries again (`retry`) and those done. A row cut short by the kill is dropped. Temporary files of a
        write in progress are removed.
        """
        for folder in (self.masks, self.overlays):
            for tmp in folder.rglob(".*.tmp") if folder.is_dir() else []:
                tmp.unlink(missing_ok=True)
        wanted, again = {str(d) for d in done}, {str(r) for r in retry}
        for name, header, keep in ((self.areas, self.area_header(), lambda r: r[0] in wanted),
                                   (self.failures, ["image", "reason"], lambda r: r[0] not in wanted | again)):
            tables = [name, *sorted(self.root.glob(f"{name.stem}.*.csv"))]
            rows: dict[str, list[str]] = {}
            for table in (t for t in tables if t.is_file()):
                with open(table, newline="") as f:
                    for row in list(csv.reader(f))[1:]:
                        if len(row) == len(header) and keep(row):
                            rows[row[0]] = row  # the last wins: a redone image's newest row
            if name.is_file() or rows:
                buffer = io.StringIO()
                csv.writer(buffer).writerows([header, *rows.values()])
                write_text(name, buffer.getvalue())
            for part in tables[1:]:
                part.unlink()

    def start(self, overwrite: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for table, header in ((self.areas, self.area_header()), (self.failures, ["image", "reason"])):
            if overwrite or not table.is_file():
                with open(table, "w", newline="") as f:
                    csv.writer(f).writerow(header)

    def write(self, item: InputImage, image: Image.Image | None, mask: np.ndarray, alpha: float | None) -> None:
        """Mask, overlay (unless `alpha` is None), then the areas row: the row last, so a row means
        the image is complete."""
        save_mask(mask, self.labels, self.mask_path(item))
        if alpha is not None and image is not None:
            picture = overlay(image, mask, self.labels, alpha)
            atomic_write(self.overlay_path(item), lambda p: picture.save(p, format="PNG"))
        counts = np.bincount(mask.ravel(), minlength=self.labels.num_classes)[: self.labels.num_classes]
        shares = [f"{100 * c / mask.size:.4f}" for c in counts]
        self._append(self.areas, [str(item.rel), mask.shape[1], mask.shape[0], *counts.tolist(), *shares])

    def fail(self, item: InputImage, reason: str) -> None:
        self._append(self.failures, [str(item.rel), reason])

    @staticmethod
    def _append(table: Path, row: list) -> None:
        with open(table, "a", newline="") as f:
            csv.writer(f).writerow(row)
            f.flush()


def save_mask(mask: np.ndarray, labels: LabelSet, path: Path) -> None:
    """Class ids as an indexed ("P") PNG whose palette is the label set's colours: the bytes are the
    ids themselves (no colour matching, no quantisation)."""
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    colours = np.zeros((256, 3), dtype=np.uint8)  # ids past the classes (255 = ignored) stay black
    colours[: labels.num_classes] = np.asarray(labels.palette, dtype=np.uint8)
    img.putpalette(colours.ravel().tolist())
    atomic_write(path, lambda p: img.save(p, format="PNG"))


def overlay(image: Image.Image, mask: np.ndarray, labels: LabelSet, alpha: float) -> Image.Image:
    """The tinted picture with a legend of the classes it shows stacked below it."""
    scale = min(1.0, OVERLAY_MAX_SIDE / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))  # nearest: never blend ids
    tinted = blend(image, mask, labels, alpha)
    shown = [i for i in np.unique(mask).tolist() if i != labels.background]  # background is left untinted
    if not shown:
        return tinted
    key = legend(labels, present=shown, max_width=tinted.width)
    canvas = Image.new("RGB", (tinted.width, tinted.height + key.height), "white")
    canvas.paste(tinted, (0, 0))
    canvas.paste(key, (0, tinted.height))
    return canvas
