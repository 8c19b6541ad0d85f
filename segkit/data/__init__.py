"""The data layer: from a dataset on the Hub or on disk to batches of images and training ids.

Files read in data-flow order: `source.py` (the shape every source takes) <- `sources/` (one
reader per kind of dataset; files decoded by `decode.py`) -> `classes.py` (source ids ->
training ids, 255 = ignored) -> `stats.py` (class statistics, cached) -> `augment.py`
(training augmentation, evaluation transform) -> `sampling.py` (order and seeds) -> `dataset.py`
(items, collate, `build_data`) -> `loaders.py`. `segkit inspect` (`audit.py`) checks it all.

The public names below load on first use: inference and the model families import
`eval_transform.py` alone, without the datasets and albumentations that training data needs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CatMaxRatioCrop", "ClassStats", "DataBundle", "DataError", "EvalTransform",
           "SegmentationDataset", "Selection", "Source", "StreamingSegmentationDataset", "build_data",
           "build_transforms", "cached_stats", "compute_stats", "eval_collate", "load_source",
           "make_synthetic", "select_classes", "train_collate", "worker_init_fn"]

_PUBLIC = {
    "CatMaxRatioCrop": "segkit.data.augment",
    "ClassStats": "segkit.data.stats",
    "DataBundle": "segkit.data.dataset",
    "DataError": "segkit.data.errors",
    "EvalTransform": "segkit.data.eval_transform",
    "SegmentationDataset": "segkit.data.dataset",
    "Selection": "segkit.data.classes",
    "Source": "segkit.data.source",
    "StreamingSegmentationDataset": "segkit.data.dataset",
    "build_data": "segkit.data.dataset",
    "build_transforms": "segkit.data.augment",
    "cached_stats": "segkit.data.stats",
    "compute_stats": "segkit.data.stats",
    "eval_collate": "segkit.data.dataset",
    "load_source": "segkit.data.sources.hub_datasets",
    "make_synthetic": "segkit.data.sources.synthetic",
    "select_classes": "segkit.data.classes",
    "train_collate": "segkit.data.dataset",
    "worker_init_fn": "segkit.data.sampling",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'segkit.data' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
