"""The data layer: from a dataset on the Hub or on disk to batches of images and training ids.

Files read in data-flow order: `source.py` (the shape every source takes) <- `sources/` (one
reader per kind of dataset; files decoded by `decode.py`) -> `classes.py` (source ids ->
training ids, 255 = ignored) -> `stats.py` (class statistics, cached) -> `augment.py`
(training augmentation, evaluation transform) -> `sampling.py` (order and seeds) -> `dataset.py`
(items, collate, `build_data`) -> `loaders.py`. `segkit inspect` (`audit.py`) checks it all.
"""

from segkit.data.augment import CatMaxRatioCrop, EvalTransform, build_transforms
from segkit.data.classes import Selection, select_classes
from segkit.data.dataset import (
    DataBundle,
    SegmentationDataset,
    StreamingSegmentationDataset,
    build_data,
    eval_collate,
    train_collate,
)
from segkit.data.errors import DataError
from segkit.data.source import Source
from segkit.data.sources.hub_datasets import load_source
from segkit.data.sampling import worker_init_fn
from segkit.data.stats import ClassStats, cached_stats, compute_stats
from segkit.data.sources.synthetic import make_synthetic

__all__ = [
    "CatMaxRatioCrop",
    "ClassStats",
    "DataBundle",
    "DataError",
    "EvalTransform",
    "SegmentationDataset",
    "Selection",
    "Source",
    "StreamingSegmentationDataset",
    "build_data",
    "build_transforms",
    "cached_stats",
    "compute_stats",
    "eval_collate",
    "load_source",
    "make_synthetic",
    "select_classes",
    "train_collate",
    "worker_init_fn",
]
