"""The data layer: from a dataset on the Hub or on disk to batches of images and training ids.

Flow: `load_source` (sources.py, folder.py, synthetic.py; files decoded by decode.py) ->
`select_classes` (classes.py: source ids -> training ids, 255 = ignored) -> `compute_stats`
(stats.py, cached) -> `build_transforms` (augment.py) -> `SegmentationDataset` and the collate
functions (dataset.py). `build_data` runs the whole chain; `segkit inspect` (audit.py) checks it.
"""

from segkit.data.augment import build_transforms, worker_init_fn
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
from segkit.data.sources import Source, load_source
from segkit.data.stats import ClassStats, cached_stats, compute_stats
from segkit.data.synthetic import make_synthetic

__all__ = [
    "ClassStats",
    "DataBundle",
    "DataError",
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
