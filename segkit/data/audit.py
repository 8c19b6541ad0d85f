"""`segkit inspect RECIPE`: check the labels before spending hours training on them.

One pass per split, after class selection, fully decoding every image and mask: sample counts,
per-class pixel share and image count, chosen classes absent from a split, mask values outside the
source's label range, image/mask size mismatches and unreadable files. Problems that would ruin a
training run are `fatal` (non-zero exit). `samples.png` shows a few images beside their coloured
masks (255 drawn black) with a legend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from segkit.config.recipe import Recipe
from segkit.data.classes import Selection, describe_selection, select_classes
from segkit.data.dataset import STREAM_STATS_ROWS, capped_rows
from segkit.data.decode import location, read_image, read_label, undecoded
from segkit.data.errors import DataError
from segkit.data.source import SPLITS, Source
from segkit.data.sources.hub_datasets import load_source
from segkit.data.stats import (
    ClassStats,
    StatsCounter,
    cache_dir,
    stats_key,
    store_stats,
)
from segkit.evaluation.overlays import draw_text, font, legend
from segkit.labels import LabelSet

GRID_SAMPLES, GRID_COLUMNS, CELL, PAD, CAPTION = 8, 2, 192, 6, 16
"""samples.png layout: up to 8 samples, 2 per row, each an image and its mask in CELL-pixel squares."""
SHOWN = 5
"""Files listed per kind of problem; the rest are counted."""


@dataclass
class SplitAudit:
    name: str
    num_samples: int
    stats: ClassStats
    absent: list[str] = field(default_factory=list)
    """Training classes with no pixel in this split."""
    out_of_range: list[tuple[str, list[int]]] = field(default_factory=list)
    """(file, mask values that are not source classes)."""
    size_mismatches: list[tuple[str, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    """(file, image width x height, mask width x height)."""
    unreadable: list[str] = field(default_factory=list)
    """Messages naming unreadable or truncated files."""
    without_classes: int = 0
    """Samples with none of the selected classes besides background (what `drop_empty` drops)."""


@dataclass
class AuditReport:
    source: str
    labels: LabelSet
    mapping: str
    """Training id -> source classes, as printed."""
    splits: dict[str, SplitAudit]
    fatal: list[str]
    warnings: list[str]
    samples_png: Path | None = None


def _audit_split(rows: datasets.Dataset | datasets.IterableDataset, name: str, selection: Selection,
                 source: Source, grid: set[int], shown: list) -> SplitAudit:
    counter = StatsCounter(selection)
    audit = SplitAudit(name, 0, counter.result())
    foreground = np.zeros(256, dtype=bool)
    foreground[selection.labels.foreground_ids] = True
    total = len(rows) if isinstance(rows, datasets.Dataset) else None
    for i, row in enumerate(tqdm(undecoded(rows), total=total, desc=f"inspect {name}", unit="img", disable=None)):
        where_image, where_label = location(row["image"], name, i), location(row["label"], name, i)
        try:
            image = read_image(row["image"], where_image)
            source_ids = read_label(row["label"], where_label, source.palette)
        except DataError as e:
            audit.unreadable.append(str(e))
            counter.add_missing()
            continue
        mask_size = (source_ids.shape[1], source_ids.shape[0])
        if image.size != mask_size:
            audit.size_mismatches.append((where_image, image.size, mask_size))
        unknown = counter.add(source_ids)
        if unknown:
            audit.out_of_range.append((where_label, unknown))
        labels = selection.apply(source_ids, strict=False)
        audit.without_classes += not foreground[labels].any()
        if i in grid and image.size == mask_size:
            shown.append((Path(where_image.split(" (")[0]).name, _thumb(image, labels)))
    audit.stats = counter.result()
    audit.num_samples = audit.stats.num_images
    audit.absent = [n for n, c in zip(selection.labels.names, audit.stats.pixel_counts) if c == 0]
    return audit


def _thumb(image: Image.Image, labels: np.ndarray) -> tuple[Image.Image, Image.Image]:
    image = image.copy()
    image.thumbnail((CELL, CELL))
    mask = Image.fromarray(labels).resize(image.size, Image.NEAREST)  # nearest: never blend class ids
    return image, mask


def _problems(report: AuditReport, explicit: bool) -> None:
    """Sort findings into fatal (training would be wrong) and warnings."""
    background = report.labels.background
    for name, s in report.splits.items():
        if s.num_samples == 0:
            report.fatal.append(f"{name}: no readable samples.")
        missing = [n for i, n in enumerate(report.labels.names) if n in s.absent and i != background]
        if missing and name == "train" and explicit:
            report.fatal.append(f"train: chosen classes absent from every training image: {missing}. "
                                "The model cannot learn them; check classes.select.")
        elif missing:
            report.warnings.append(f"{name}: classes with no pixels: {missing[:20]}"
                                   f"{' ...' if len(missing) > 20 else ''}")
        for kind, items, fix in (
            ("mask values outside the source's label range", [f"{f}: {v[:10]}" for f, v in s.out_of_range],
             "fix the masks or name the ids in data.class_names"),
            ("image/mask size mismatches", [f"{f}: image {a[0]}x{a[1]}, mask {b[0]}x{b[1]}" for f, a, b in s.size_mismatches],
             "masks must match their images pixel for pixel"),
            ("unreadable files", s.unreadable, "re-export or remove them"),
        ):
            if items:
                listed = "\n      ".join(items[:SHOWN]) + (f"\n      ... and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
                report.fatal.append(f"{name}: {len(items)} {kind} ({fix}):\n      {listed}")
        if name == "train" and s.without_classes:
            report.warnings.append(f"train: {s.without_classes} of {s.num_samples} images hold none of the chosen "
                                   "classes (classes.drop_empty: true drops them).")


def _rows(source: Source, name: str, recipe: Recipe):
    """The rows training would see: the same seeded caps as build_data (drop_empty is only reported)."""
    rows, c = source.splits[name], recipe.classes
    cap = c.max_samples if name == "train" else c.max_eval_samples
    if isinstance(rows, datasets.IterableDataset):
        return rows.take(cap or STREAM_STATS_ROWS)
    keep = capped_rows(np.arange(len(rows)), cap, recipe.data.seed)
    return rows if len(keep) == len(rows) else rows.select(keep.tolist())


def inspect_recipe(recipe: Recipe, output_dir: Path) -> AuditReport:
    """Audit every split of the recipe's data; write `output_dir/samples.png`."""
    source = load_source(recipe.data, keep_faults=True)
    selection = select_classes(source, recipe.classes)
    report = AuditReport(f"{source.name} ({recipe.data.format})", selection.labels, describe_selection(selection, source), {}, [], [])
    report.fatal += [f"export: {f}" for f in source.faults]  # annotation exports: found while rasterising
    report.warnings += [f"export: {w}" for w in source.warnings]
    shown: list = []
    for name in (s for s in SPLITS if s in source.splits):
        rows = _rows(source, name, recipe)
        n = len(rows) if isinstance(rows, datasets.Dataset) else GRID_SAMPLES
        grid = set(np.linspace(0, n - 1, min(GRID_SAMPLES, n)).round().astype(int).tolist()) if not shown else set()
        audit = _audit_split(rows, name, selection, source, grid, shown)
        report.splits[name] = audit
        clean = not (audit.unreadable or audit.out_of_range or audit.size_mismatches)
        if name == "train" and clean and isinstance(rows, datasets.Dataset) and not recipe.classes.drop_empty:
            # the same counts training would compute: save them the pass
            store_stats(cache_dir() / f"{stats_key(rows, selection, source.origin, 'train')}.json", audit.stats)
    _problems(report, explicit=recipe.classes.select is not None)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report.samples_png = render_samples(shown, selection.labels, output_dir / "samples.png")
    return report


def render_samples(shown: list[tuple[str, tuple[Image.Image, Image.Image]]], labels: LabelSet, path: Path) -> Path:
    """Image | coloured mask tiles, GRID_COLUMNS per row, then a legend of class colours (the
    overlays' own, with the ignored value's swatch)."""
    face = font(12)
    colours = np.zeros((256, 3), dtype=np.uint8)  # 255 (ignored) and anything unnamed: black
    colours[: labels.num_classes] = np.asarray(labels.palette, dtype=np.uint8)
    tile_w, tile_h = 2 * CELL + PAD, CELL + CAPTION + PAD
    width = GRID_COLUMNS * tile_w + PAD
    key = legend(labels, max_width=width, font_size=12, ignored=True)
    rows = (len(shown) + GRID_COLUMNS - 1) // GRID_COLUMNS
    canvas = Image.new("RGB", (width, PAD + rows * tile_h + key.height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (caption, (image, mask)) in enumerate(shown):
        x, y = PAD + (k % GRID_COLUMNS) * tile_w, PAD + (k // GRID_COLUMNS) * tile_h
        draw_text(draw, (x, y), caption[:48], (0, 0, 0), face)
        canvas.paste(image, (x, y + CAPTION))
        canvas.paste(Image.fromarray(colours[np.asarray(mask)]), (x + CELL + PAD // 2, y + CAPTION))
    canvas.paste(key, (0, PAD + rows * tile_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def format_report(report: AuditReport) -> str:
    """The report as text: classes, then one table per split, then problems."""
    lines = [f"Source: {report.source}", "Classes (training id: source classes):"]
    mapping = report.mapping.splitlines()
    if len(mapping) > 42:  # ADE20K with select: null: the identity mapping of 150 classes says little
        mapping = mapping[:20] + [f"  ... {len(mapping) - 22} more ..."] + mapping[-2:]
    lines += ["  " + line for line in mapping]
    for name, s in report.splits.items():
        share_all, share_labelled = s.stats.pixel_share(False), s.stats.pixel_share(True)
        lines += ["", f"Split {name}: {s.num_samples} samples",
                  f"  {'class':<24} {'% of pixels':>11} {'% labelled':>11} {'images':>7}"]
        many = len(report.labels.names) > 40  # ADE20K: list only the classes this split has
        for c, cls in enumerate(report.labels.names):
            if many and s.stats.pixel_counts[c] == 0:
                continue
            lines.append(f"  {cls[:24]:<24} {100 * share_all[c]:>10.1f}% {100 * share_labelled[c]:>10.1f}% "
                         f"{int(s.stats.image_counts[c]):>7}")
        total = int(s.stats.pixel_counts.sum()) + s.stats.ignored_pixels
        ignored = 100 * s.stats.ignored_pixels / total if total else 0.0
        lines.append(f"  {'(ignored, 255)':<24} {ignored:>10.1f}% {'-':>11}")
        if many and s.absent:
            lines.append(f"  ({len(s.absent)} classes with no pixels not listed)")
    lines.append("")
    lines += [f"FATAL {p}" for p in report.fatal] + [f"warning: {w}" for w in report.warnings]
    if not report.fatal:
        lines.append("No fatal problems: the data is ready to train on.")
    if report.samples_png:
        lines.append(f"Samples: {report.samples_png}")
    return "\n".join(lines)


def inspect_main(recipe: Recipe, output_dir: Path) -> int:
    """Print the audit; exit code 1 on fatal problems, 2 when the data cannot be loaded at all."""
    try:
        report = inspect_recipe(recipe, output_dir)
    except DataError as e:
        print(f"error: {e}")
        return 2
    print(format_report(report))
    return 1 if report.fatal else 0
