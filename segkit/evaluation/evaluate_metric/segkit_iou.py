"""segkit's IoU as an `evaluate` module: streaming, exact, and loadable offline.

    import evaluate
    from segkit.evaluation.metrics import EVALUATE_MODULE

    metric = evaluate.load(EVALUATE_MODULE, num_labels=3, class_names=["background", "car", "person"],
                           background=0)          # ignore_index defaults to 255
    for pred, ref in batches:                     # (H, W) integer masks, any size per image
        metric.add_batch(predictions=pred, references=ref)
    results = metric.compute()                    # segkit's own dict: strict, foreground, per_class

Unlike the Hub's `mean_iou`, `add_batch` counts into one C x C confusion matrix and keeps nothing
else: memory is O(C²) however many masks go in (evaluate's cache files are never written). A class
with no truth and no predicted pixels is reported with status "absent" and None scores, never NaN,
and is left out of the means. `compute` returns exactly `segkit.evaluation.metrics.compute_metrics`
of that matrix. One process per metric object: under several processes, gather the masks first
(`transformers.Trainer` does) or sum `metric.matrix` yourself.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np

from segkit.evaluation.metrics import ConfusionMatrix, compute_metrics
from segkit.labels import IGNORE_INDEX, LabelSet

_KWARGS_DESCRIPTION = """
Args (to `evaluate.load`):
    num_labels: number of classes (ids 0..num_labels-1); or give `class_names`.
    class_names: the class names, in id order (default "0", "1", ...).
    background: id of the background class, for the foreground view (default: none, so the
        foreground view equals the strict one).
    ignore_index: label value that is never scored (default 255). -100, which
        transformers.Trainer pads with, is ignored as well.
Args (to `add_batch` / `compute`):
    predictions: integer class-id masks, a list of (H, W) arrays or one (B, H, W) array.
    references: the truth masks, same shapes.
Returns: {"strict": {...}, "foreground": {...}, "per_class": {name: {...}}, "num_pixels": int}
"""

PAD_INDEX = -100
"""What transformers.Trainer pads masks of different sizes with when it concatenates batches."""


class SegkitIoU(evaluate.Metric):
    def __init__(self, num_labels: int | None = None, class_names: list[str] | None = None,
                 background: int | None = None, ignore_index: int = IGNORE_INDEX, **kwargs: Any):
        super().__init__(**kwargs)
        if class_names is None and num_labels is None:
            raise ValueError("segkit_iou needs the classes: evaluate.load(EVALUATE_MODULE, num_labels=N) "
                             "or class_names=[...].")
        names = list(class_names) if class_names is not None else [str(k) for k in range(num_labels)]
        if num_labels is not None and num_labels != len(names):
            raise ValueError(f"num_labels={num_labels} but class_names has {len(names)} names.")
        self.labels = LabelSet(names=tuple(names), background=background, ignore_index=ignore_index)
        self.matrix = ConfusionMatrix(len(names), ignore_index)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64")))}),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs) -> None:
        """Count a batch of masks into the confusion matrix; nothing else is kept."""
        if predictions is None or references is None:
            raise ValueError("add_batch needs both predictions= and references=.")
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
        for pred, ref in zip(predictions, references):
            pred, ref = np.asarray(pred), np.asarray(ref)
            if pred.shape != ref.shape:
                raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape.")
            if pred.dtype.kind in "iu" and ref.dtype.kind in "iu":
                padded = (ref == PAD_INDEX) | (pred == PAD_INDEX)
                if padded.any():
                    ref = np.where(padded, self.labels.ignore_index, ref)
                    pred = np.where(padded, 0, pred)  # any class id: the pixel is ignored anyway
            self.matrix.update(pred, ref)

    def add(self, *, prediction=None, reference=None, **kwargs) -> None:
        """Count one mask (evaluate appends the argument descriptions to this docstring)."""
        self.add_batch(predictions=[prediction], references=[reference])

    def compute(self, *, predictions=None, references=None, **kwargs) -> dict[str, Any]:
        """Scores of everything added (plus `predictions`/`references`, if given); then starts over."""
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references)
        result = compute_metrics(self.matrix.matrix, self.labels)
        self.matrix.reset()
        return result

    def _compute(self, predictions=None, references=None, **kwargs) -> dict[str, Any]:
        raise NotImplementedError("SegkitIoU.compute counts streamed masks; it never reads evaluate's cache.")
