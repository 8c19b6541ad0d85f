"""The shape every source takes: a `Source`, and the helpers that give any dataset that shape.

`Source.splits` (train/val/test) each have exactly two columns, `image` (a picture) and `label`
(a single-channel map of SOURCE class ids). Class selection (`classes.py`) turns source ids into
training ids later; nothing here renumbers labels. The readers that make Sources live in
`segkit/data/sources/`, one module per kind of dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import yaml

from segkit.data.errors import DataError

Split = datasets.Dataset | datasets.IterableDataset
SPLITS = ("train", "val", "test")
"""segkit's split names, in the order they are used."""
HUB_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
"""What the Hub's datasets call them (ADE20K's parquet export, datasets' own conventions)."""
SPLIT_ALIASES = dict(zip(SPLITS, (("train", "training"), ("validation", "val", "valid"), ("test", "testing"))))
"""segkit split name -> source split names it is found under, in order of preference."""
IMAGE_COLUMNS = ("image", "pixel_values", "img")
LABEL_COLUMNS = ("annotation", "label", "mask", "segmentation", "semantic", "semantic_segmentation")
UNLABELED_NAMES = ("unlabeled", "unlabelled", "void", "ignore", "ignored", "other", "undefined")
"""Source class names taken to mean "not annotated": their pixels become 255 unless selected."""
STREAM_VAL_ROWS = 200
"""Rows held out as `val` from a streamed train-only source whose size the Hub does not report."""


@dataclass
class Source:
    """Rows of a dataset in one schema, plus what its label ids mean.

    Every split has exactly the columns `image` and `label`; `label` holds SOURCE class ids
    (ADE20K: 0 other, 1..150 classes), which `select_classes` maps to training ids.
    """

    splits: dict[str, Split]
    """Keys among train/val/test."""
    class_names: dict[int, str]
    """Source id -> display name."""
    ignore_ids: list[int]
    """Source ids meaning unlabeled/other: they become 255 unless explicitly selected."""
    name: str
    """Short name for reports and caches, e.g. `ade20k`."""
    aliases: dict[int, list[str]] = field(default_factory=dict)
    """Extra names a class can be selected by (ADE20K `window` for `windowpane`)."""
    palette: list[tuple[int, int, int]] | None = None
    """Colour of each source id when masks are RGB images (`folder` format with `data.palette`)."""
    origin: str = ""
    """Format, path and revision: what identifies the data for the statistics cache."""
    faults: list[str] = field(default_factory=list)
    """Annotation-export problems that make training wrong (unknown label, missing image, bad RLE),
    each naming its file: `load_source` refuses them, `segkit inspect` lists them."""
    warnings: list[str] = field(default_factory=list)
    """Export problems worth knowing that do not stop training (a degenerate polygon, an empty segmentation)."""


def detect_columns(ds: Split, image_column: str | None, label_column: str | None, where: str) -> Split:
    """Keep only the image and label columns, renamed to `image` and `label`."""
    columns = list(ds.column_names or next(iter(ds)).keys())

    def pick(given: str | None, candidates: tuple[str, ...], field_name: str) -> str:
        if given is not None and given in columns:
            return given
        found = [c for c in candidates if c in columns] if given is None else []
        if not found:
            raise DataError(f"{where}: no {field_name.split('_')[0]} column "
                            f"{'named ' + repr(given) if given else 'found'}; columns are {columns}. "
                            f"Set data.{field_name} to one of them.")
        return found[0]

    image = pick(image_column, IMAGE_COLUMNS, "image_column")
    label = pick(label_column, LABEL_COLUMNS, "label_column")
    ds = ds.select_columns([image, label])
    return ds.rename_columns({k: v for k, v in ((image, "image"), (label, "label")) if k != v})


def pick_splits(available: list[str], wanted: dict[str, str], where: str) -> dict[str, str]:
    """segkit split -> source split: `data.splits` when given, else by the usual names."""
    if wanted:
        unknown = sorted(set(wanted) - set(SPLIT_ALIASES))
        missing = [s for s in wanted.values() if s not in available]
        if unknown or missing:
            raise DataError(f"{where}: data.splits names {unknown or missing}, but segkit splits are "
                            f"train/val/test and the source has {available}.")
        return dict(wanted)
    found = {ours: next((s for s in names if s in available), None) for ours, names in SPLIT_ALIASES.items()}
    return {ours: theirs for ours, theirs in found.items() if theirs is not None}


def hold_out_val(splits: dict[str, Split], fraction: float, seed: int) -> dict[str, Split]:
    """Give a source without a validation split one, seeded, out of train.

    A streamed train split is not shuffled first: a shuffled stream reshuffles each epoch
    (`set_epoch`), and `skip` would then hand val rows back to training. The first rows in file
    order are held out instead.
    """
    train = splits.get("train")
    if "val" in splits or train is None or fraction <= 0:
        return splits
    if isinstance(train, datasets.IterableDataset):
        total = next((s.num_examples for s in (train.info.splits or {}).values() if s.num_examples), 0)
        n_val = max(1, round(total * fraction)) if total else STREAM_VAL_ROWS
        return {**splits, "train": train.skip(n_val), "val": train.take(n_val)}
    if len(train) < 2:
        return splits
    n_val = min(len(train) - 1, max(1, round(len(train) * fraction)))
    parts = train.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return {**splits, "train": parts["train"], "val": parts["test"]}


def unlabeled_ids(names: dict[int, str]) -> list[int]:
    """Ids whose name says "not annotated" (unlabeled, void, other, ...), alone or as the group of
    a "group-name" class: sidewalk's void-ground, void-dynamic, void-static and void-unclear are
    ignored, as Cityscapes ignores its void group (they are what the annotators left unresolved)."""
    def says_unlabeled(name: str) -> bool:
        text = name.strip().lower()
        return text.replace("-", "").replace("_", "") in UNLABELED_NAMES or re.split(r"[-_]", text, maxsplit=1)[0] in UNLABELED_NAMES
    return [i for i, n in names.items() if says_unlabeled(n)]


def class_names_for(given: list[str] | str | None, fallback: Callable[[], dict[int, str] | None],
                    where: str) -> dict[int, str]:
    """`data.class_names` when given, else what the source ships (`fallback()`), else an error."""
    if given is not None:
        return read_class_names(given)
    names = fallback()
    if not names:
        raise DataError(f"{where}: no class names found (no id2label.json). Set data.class_names to a "
                        "list of names by id, or a JSON/YAML/TXT file holding them.")
    return names


def read_class_names(value: list[str] | str) -> dict[int, str]:
    """Class names by id from a list, or from a JSON/YAML file (list or {id: name}) or TXT file
    (one name per line, line number = id)."""
    if isinstance(value, list):
        return {i: str(n) for i, n in enumerate(value)}
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataError(f"data.class_names: file {path} not found. Give a list of names or a JSON/YAML/TXT file.")
    text = path.read_text()
    if path.suffix.lower() == ".txt":
        loaded: object = [line.strip() for line in text.rstrip().splitlines()]
    else:
        try:  # YAML is a superset of JSON, so one parser reads both
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"data.class_names: {path} is not valid JSON/YAML: {e}") from None
    if isinstance(loaded, list):
        return {i: str(n) for i, n in enumerate(loaded)}
    if isinstance(loaded, dict) and all(str(k).strip().isdigit() for k in loaded):
        return {int(k): str(v) for k, v in loaded.items()}
    raise DataError(f"data.class_names: {path} must hold a list of names or a mapping id -> name.")
