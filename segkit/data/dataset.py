"""From a source split to model inputs: decode, select classes, augment, collate.

`build_data(recipe, mean, std)` does it all and returns a `DataBundle`: the class selection (which
owns the label set), the datasets for train/val/test and the (cached) class statistics of the
training split. Training items are augmented crops; evaluation items are the model's evaluation
transform of the image, with the label at its original resolution (255 = ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import datasets
import numpy as np
import torch
from PIL import Image

from segkit.config.recipe import Recipe
from segkit.data.augment import build_transforms, reseed_transform
from segkit.data.classes import Selection, select_classes
from segkit.data.decode import location, read_image, read_label, undecoded
from segkit.data.errors import DataError
from segkit.data.eval_transform import EvalTransform
from segkit.data.pixels import hwc_to_chw_uint8
from segkit.data.source import Source
from segkit.data.sources.hub_datasets import load_source
from segkit.data.stats import ClassStats, cached_stats, compute_stats
from segkit.labels import LabelSet

STREAM_STATS_ROWS = 500
"""A streamed train split has no end to count to: its statistics come from its first rows."""
STREAM_SHUFFLE_BUFFER = 1000
STREAM_EVAL_ROWS = 1000
"""A streamed val/test split is read once into memory, at most this many rows unless
`classes.max_eval_samples` says otherwise: scoring, overlays and multi-process sharding need
random access, and evaluation splits are small next to training sets."""


class _Rows:
    """Reads one row of a split as (RGB image, training ids), with errors naming the file."""

    def __init__(self, selection: Selection, split: str, palette: list[tuple[int, int, int]] | None) -> None:
        self.selection, self.split, self.palette = selection, split, palette

    def decode(self, row: dict[str, Any], index: int) -> tuple[Image.Image, np.ndarray]:
        where_image = location(row["image"], self.split, index)
        where_label = location(row["label"], self.split, index)
        image = read_image(row["image"], where_image)
        source_ids = read_label(row["label"], where_label, self.palette)
        mask_size = (source_ids.shape[1], source_ids.shape[0])
        if image.size != mask_size:
            # swapped sides usually mean a photo with an EXIF rotation, which read_image applies
            rotated = " If the photo has an EXIF rotation, the mask must match the upright picture." \
                if image.size == mask_size[::-1] else ""
            raise DataError(f"{where_image}: image is {image.size[0]}x{image.size[1]} but its mask "
                            f"{where_label} is {mask_size[0]}x{mask_size[1]} (width x height). Masks must "
                            f"match their images pixel for pixel; re-export or remove the pair.{rotated}")
        try:
            return image, self.selection.apply(source_ids)
        except DataError as e:
            raise DataError(f"{where_label}: {e}") from None


def _item(image: Image.Image, labels: np.ndarray, transform: Any, train: bool, index: int) -> dict[str, Any]:
    if train:
        # uint8 on the wire, normalised on the device (segkit.data.pixels); labels stay uint8 too,
        # since every training id is below 255 and 255 means ignored
        out = transform(image=np.asarray(image), mask=labels)
        return {"pixel_values": hwc_to_chw_uint8(out["image"]), "labels": torch.from_numpy(np.ascontiguousarray(out["mask"])),
                "index": index}
    # the label is not resized: scoring happens at its own size (segkit.infer.scores)
    return {"pixel_values": transform(image), "labels": torch.from_numpy(labels).long(), "index": index}


class SegmentationDataset(torch.utils.data.Dataset):
    """One split of a source, with class selection and augmentation applied per item.

    Training items: `pixel_values` uint8 (3, h, w), `labels` uint8 (h, w) training ids with 255
    ignored (normalised and widened on the device: segkit.data.pixels), `index` the row number.
    Evaluation items: `pixel_values` float32 from the model's processor, `labels` int64 at the
    image's original size.
    """

    def __init__(self, rows: datasets.Dataset, selection: Selection, transform: Any, train: bool,
                 split: str = "train", palette: list[tuple[int, int, int]] | None = None) -> None:
        self.rows = undecoded(rows)
        self.selection, self.transform, self.train, self.split = selection, transform, train, split
        self._reader = _Rows(selection, split, palette)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image, labels = self.raw(i)
        except DataError as e:
            if not self.train:
                raise
            return {"skipped": str(e), "index": i}  # listed and counted by the trainer (data/skips.py)
        return _item(image, labels, self.transform, self.train, i)

    def raw(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """The unaugmented RGB image and its (H, W) training ids, for overlays."""
        return self._reader.decode(self.rows[int(i)], int(i))

    def reseed(self, seed: int) -> None:
        """New augmentation seed; called per worker (`worker_init_fn`) or per item by the trainer."""
        reseed_transform(self.transform, seed)


class StreamingSegmentationDataset(torch.utils.data.IterableDataset):
    """The same items as SegmentationDataset, for a streamed split (no random access, no length).

    DataLoader workers each read their own shards (datasets splits them by worker).
    """

    def __init__(self, rows: datasets.IterableDataset, selection: Selection, transform: Any, train: bool,
                 split: str = "train", palette: list[tuple[int, int, int]] | None = None,
                 drop_empty: bool = False) -> None:
        self.rows = undecoded(rows)
        self.selection, self.transform, self.train, self.drop_empty = selection, transform, train, drop_empty
        self._reader = _Rows(selection, split, palette)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        foreground = np.zeros(256, dtype=bool)
        foreground[self.selection.labels.foreground_ids] = True
        for i, row in enumerate(self.rows):
            try:
                image, labels = self._reader.decode(row, i)
            except DataError as e:
                if not self.train:
                    raise
                yield {"skipped": str(e), "index": i}  # a stream cannot be audited up front (data/skips.py)
                continue
            if self.drop_empty and not foreground[labels].any():
                continue
            yield _item(image, labels, self.transform, self.train, i)

    def reseed(self, seed: int) -> None:
        reseed_transform(self.transform, seed)

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)  # a new shuffle order each epoch


def train_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Training crops share one size: stack them. Unreadable samples are left out and passed on
    as `skipped` [(index, reason)]; a batch of only those has no tensors."""
    good = [it for it in items if "skipped" not in it]
    batch: dict[str, Any] = {}
    if good:  # tensors first: accelerate finds the batch size from the first entry
        batch["pixel_values"] = torch.stack([it["pixel_values"] for it in good])
        batch["labels"] = torch.stack([it["labels"] for it in good])
    if len(good) < len(items):
        batch["skipped"] = [(int(it["index"]), it["skipped"]) for it in items if "skipped" in it]
    return batch


class TargetCollate:
    """`train_collate`, plus per-image targets made on the CPU by `build(labels)`: for MaskFormer
    and Mask2Former, `mask_labels` [n_present, H, W] bool and `class_labels` [n_present] int64
    (`segkit.models.maskformer.SemanticTargets`). In a worker, that work overlaps the device's
    step; on the device it needed two host syncs per image (the unique ids and the indexing)."""

    def __init__(self, build: Any) -> None:
        self.build = build

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = train_collate(items)
        if "labels" in batch:
            pairs = [self.build(labels) for labels in batch["labels"]]
            batch["mask_labels"] = [masks for masks, _ in pairs]
            batch["class_labels"] = [ids for _, ids in pairs]
        return batch


def eval_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Lists, not stacked tensors: evaluation images keep their own sizes, and padding them to a
    common one would change the scores (`segkit.infer.scores` batches same-shaped inputs itself)."""
    return {"pixel_values": [it["pixel_values"] for it in items], "labels": [it["labels"] for it in items],
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}


def nonempty_rows(presence: np.ndarray, labels: LabelSet) -> np.ndarray:
    """Rows that contain at least one selected class other than background (`classes.drop_empty`)."""
    return np.flatnonzero(presence[:, labels.foreground_ids].any(axis=1))


def capped_rows(rows: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """A seeded choice of `cap` rows, kept in their original order; all rows when there is no cap."""
    if cap is None or cap >= len(rows):
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


@dataclass
class DataBundle:
    """Everything training and evaluation need from the data side."""

    selection: Selection
    """Source ids -> training ids, and the label set (`labels`), which it owns."""
    source: Source
    train: torch.utils.data.Dataset | None
    val: torch.utils.data.Dataset | None
    """The source's val split, or its test split when it has no val."""
    test: torch.utils.data.Dataset | None
    stats: ClassStats
    """Class statistics of the train split as used (after drop_empty and caps), cached."""

    @property
    def labels(self) -> LabelSet:
        return self.selection.labels


def _train_split(source: Source, selection: Selection, recipe: Recipe) -> tuple[datasets.Dataset, ClassStats]:
    """Apply drop_empty and max_samples to train; statistics of exactly the rows kept."""
    rows, c, seed = source.splits["train"], recipe.classes, recipe.data.seed
    kw = {"origin": source.origin, "palette": source.palette}
    keep = np.arange(len(rows))
    stats = None
    if c.drop_empty:
        stats = cached_stats(rows, selection, split="train", **kw)
        keep = nonempty_rows(stats.presence, selection.labels)
        if len(keep) == 0:
            raise DataError("classes.drop_empty: no training image contains any selected class. "
                            "Check classes.select against `segkit inspect`.")
    keep = capped_rows(keep, c.max_samples, seed)
    if len(keep) < len(rows):
        rows = rows.select(keep.tolist())
        stats = None
    return rows, stats or cached_stats(rows, selection, split="train", **kw)


def _eval_split(rows: datasets.Dataset, cap: int | None, seed: int) -> datasets.Dataset:
    return rows.select(capped_rows(np.arange(len(rows)), cap, seed).tolist()) if cap and cap < len(rows) else rows


def build_data(recipe: Recipe, mean: Sequence[float], std: Sequence[float], *, source: Source | None = None,
               selection: Selection | None = None, eval_transform: EvalTransform | None = None) -> DataBundle:
    """Source -> selection -> datasets with transforms; `source`/`selection` may be passed in if built.

    `eval_transform` is the model's (`segkit.infer.scores.eval_transform`); without a model, the one a
    model with these mean/std and the recipe's eval settings would have.
    """
    source = source or load_source(recipe.data)
    selection = selection or select_classes(source, recipe.classes)
    aug, seed = recipe.augment, recipe.train.seed
    train_tf = build_transforms(aug, mean, std, train=True, seed=seed)
    eval_tf = eval_transform or build_transforms(aug, mean, std, train=False)
    stream = isinstance(source.splits["train"], datasets.IterableDataset)
    if stream:
        rows = source.splits["train"]
        stats = compute_stats(rows, selection, palette=source.palette, limit=STREAM_STATS_ROWS)
        rows = rows.shuffle(seed=recipe.data.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
        rows = rows.take(recipe.classes.max_samples) if recipe.classes.max_samples else rows
        train: Any = StreamingSegmentationDataset(rows, selection, train_tf, True, "train", source.palette,
                                                  drop_empty=recipe.classes.drop_empty)
    else:
        rows, stats = _train_split(source, selection, recipe)
        train = SegmentationDataset(rows, selection, train_tf, True, "train", source.palette)

    def evaluation(name: str) -> Any:
        if name not in source.splits:
            return None
        split = source.splits[name]
        if isinstance(split, datasets.IterableDataset):
            rows = list(split.take(recipe.classes.max_eval_samples or STREAM_EVAL_ROWS))
            split = datasets.Dataset.from_list(rows, features=split.features)
        split = _eval_split(split, recipe.classes.max_eval_samples, recipe.data.seed)
        return SegmentationDataset(split, selection, eval_tf, False, name, source.palette)

    test = evaluation("test")
    val = evaluation("val") if "val" in source.splits else test
    return DataBundle(selection, source, train, val, test, stats)
