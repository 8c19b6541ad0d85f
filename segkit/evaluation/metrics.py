"""Streaming confusion matrix -> per-class IoU, accuracy, Dice, and their means.

Metrics accumulate counts, never predictions: one ``C x C`` matrix holds everything needed for
every figure here and for the confusion plot, so evaluating a split costs O(C^2) memory however
many pixels it has, and summing the matrix across processes is exact.

Two views are reported, because "mIoU" means different things in different papers:

* ``strict``: every chosen class, background included, is scored.
* ``foreground``: pixels whose truth is background are ignored, as if they were 255. A foreground
  pixel predicted as background still counts as a miss for its class, so a model cannot look good
  by predicting background everywhere. (The Hugging Face example's ``ignore_index=0`` is neither
  view: it also keeps scoring 255 pixels.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from segkit.labels import IGNORE_INDEX, LabelSet

MetricValue = float | None
"""A metric is None, never NaN, when it is undefined: JSON has no NaN."""


class ConfusionMatrix:
    """Streaming C×C confusion matrix on the device; memory O(C²) whatever the split size.

    ``matrix[i, j]`` counts pixels whose truth is ``i`` and prediction is ``j``. It is a plain
    int64 tensor so the trainer can sum it across processes with
    ``accelerator.reduce(cm.matrix, "sum")``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: Any = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index={ignore_index} is a class id of {num_classes} classes.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Count one batch of class-id maps (any matching shapes) with a single bincount.

        Raises ValueError for float inputs (logits, or masks resized with interpolation), for
        predictions outside ``0..C-1`` and for target values that are neither a class id nor
        ``ignore_index``.
        """
        device = self.matrix.device
        pred = torch.as_tensor(pred, device=device)
        target = torch.as_tensor(target, device=device)
        if pred.shape != target.shape:
            raise ValueError(
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; "
                "resize logits to the label size before argmax."
            )
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(
                    f"{name} has dtype {t.dtype}; pass integer class ids (argmax of the logits, "
                    "masks resized with nearest-neighbour interpolation)."
                )
        if pred.numel() == 0:
            return
        c = self.num_classes
        # int32 halves the memory traffic of int64 and the largest index, 255*(C+1)+C, fits.
        p = pred.reshape(-1).to(torch.int32)
        t = target.reshape(-1).to(torch.int32)
        lo, hi = (int(v) for v in torch.aminmax(p))
        if lo < 0 or hi >= c:
            raise ValueError(f"pred holds ids {lo}..{hi}, outside the {c} classes 0..{c - 1}.")

        # Rows of stride C+1 leave column C free; no valid (truth, pred) pair reaches it, so
        # ignored pixels go to slot C (row 0, column C), and a target >= C lands past the last
        # row, where the output length shows it. That checks the target with no extra pass.
        stride = c + 1
        idx = torch.where(t != self.ignore_index, t * stride + p, c)
        try:
            counts = torch.bincount(idx, minlength=c * stride)
        except RuntimeError as e:  # bincount rejects negative values
            raise ValueError(
                f"target holds negative ids; valid are 0..{c - 1} and {self.ignore_index}."
            ) from e
        if counts.numel() > c * stride:
            bad = torch.unique(t[(t != self.ignore_index) & (t >= c)])[:10].tolist()
            raise ValueError(
                f"target holds ids {bad} that are neither a class (0..{c - 1}) nor "
                f"ignore_index={self.ignore_index}; check the class mapping or audit the labels."
            )
        self.matrix += counts.view(c, stride)[:, :c]


def _ratio(num: float, den: float) -> MetricValue:
    return float(num / den) if den > 0 else None


def _mean(values: Sequence[MetricValue]) -> MetricValue:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _class_stats(m: np.ndarray, scored: Sequence[int]) -> dict[int, dict[str, Any]]:
    """TP, truth and predicted pixel counts, and scores, for each class in `scored`.

    Pixels whose truth is not in `scored` are ignored (their rows are dropped), but every column
    stays: a pixel of a scored class predicted as an unscored one is still a miss.
    """
    rows = m[list(scored)]  # (S, C) float64
    stats = {}
    for r, k in enumerate(scored):
        tp = rows[r, k]
        gt = rows[r].sum()
        pred = rows[:, k].sum()
        present = gt > 0 or pred > 0
        stats[k] = {
            # With no truth pixels, any prediction of the class is a false positive: IoU and
            # Dice are 0. Accuracy (recall) has no denominator then, so it stays None.
            "iou": _ratio(tp, gt + pred - tp) if present else None,
            "acc": _ratio(tp, gt),
            "dice": _ratio(2 * tp, gt + pred) if present else None,
            "gt_pixels": int(gt),
            "pred_pixels": int(pred),
            "tp": tp,
            "status": "present" if present else "absent",
        }
    return stats


def _summary(stats: dict[int, dict[str, Any]]) -> dict[str, MetricValue]:
    """Means over present classes; aAcc and fwIoU over scored truth pixels."""
    per = list(stats.values())
    total = sum(s["gt_pixels"] for s in per)
    fw = sum(s["gt_pixels"] * s["iou"] for s in per if s["gt_pixels"] > 0)
    return {
        "mIoU": _mean([s["iou"] for s in per]),
        # Classes predicted but absent from the truth have no accuracy and so no say in mAcc.
        "mAcc": _mean([s["acc"] for s in per]),
        "mDice": _mean([s["dice"] for s in per]),
        "aAcc": _ratio(sum(s["tp"] for s in per), total),
        "fwIoU": _ratio(fw, total),
    }


def compute_metrics(matrix: torch.Tensor | np.ndarray, labels: LabelSet) -> dict[str, Any]:
    """Per-class and mean scores from a confusion matrix, as a JSON-serialisable dict.

    Returns ``{"strict": {...}, "foreground": {...}, "per_class": {name: {...}}, "num_pixels"}``.
    Each view holds mIoU, mAcc, mDice, aAcc and fwIoU. A class with neither truth nor predicted
    pixels is "absent": its scores are None and it is left out of every mean. Undefined values
    (no pixels at all) are None, never NaN. ``per_class`` is the strict view.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix, dtype=np.float64)  # float64: int64 counts of a large split stay exact
    c = labels.num_classes
    if m.shape != (c, c):
        raise ValueError(f"matrix has shape {m.shape}, expected ({c}, {c}) for classes {list(labels.names)}")

    strict = _class_stats(m, range(c))
    out: dict[str, Any] = {"strict": _summary(strict)}
    if labels.background is None:
        out["foreground"] = dict(out["strict"])
    else:
        out["foreground"] = _summary(_class_stats(m, labels.foreground_ids))
    out["per_class"] = {
        labels.names[k]: {key: v for key, v in s.items() if key != "tp"} for k, s in strict.items()
    }
    out["num_pixels"] = int(m.sum())
    return out


def image_scores(matrix: torch.Tensor | np.ndarray, labels: LabelSet, top_pairs: int = 3) -> dict[str, Any]:
    """One image's scores from its own confusion matrix: what the report's gallery sorts by.

    Returns ``{"pixels", "pixel_acc", "mIoU", "iou": {name: IoU}, "confused": [(truth, pred,
    pixels)]}``. ``iou`` holds only the classes present in the truth or the prediction (an image
    shows a few of the classes; the rest have nothing to score), and ``mIoU`` is their mean.
    ``confused`` lists the `top_pairs` largest off-diagonal cells, largest first. Scores of an
    image with no scored pixels are None.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix, dtype=np.float64)
    tp, gt, pred = np.diag(m), m.sum(1), m.sum(0)
    iou = {labels.names[k]: float(tp[k] / (gt[k] + pred[k] - tp[k]))
           for k in range(labels.num_classes) if gt[k] > 0 or pred[k] > 0}
    off = m.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:top_pairs]
    pairs = [(labels.names[i], labels.names[j], int(off[i, j]))
             for i, j in zip(*np.unravel_index(order, m.shape)) if off[i, j] > 0]
    total = m.sum()
    return {"pixels": int(total), "pixel_acc": _ratio(tp.sum(), total), "mIoU": _mean(list(iou.values())),
            "iou": iou, "confused": pairs}


class ImageTally:
    """A split's confusion matrix and, with `per_image`, each image's own: the split's matrix is
    then the sum of the images', so per-image scores cost no second pass over the split.

    Image matrices stay on the device until `FLUSH_EVERY` have gathered, then go to the host in
    one copy and become rows of `image_scores` (plus "index"); only the rows are kept, so memory
    stays O(C²) per batch whatever the split size.
    """

    FLUSH_EVERY = 64

    def __init__(self, cm: ConfusionMatrix, labels: LabelSet, per_image: bool = True):
        self.cm, self.labels, self.per_image = cm, labels, per_image
        self._rows: list[dict[str, Any]] = []
        self._pending: list[tuple[int, torch.Tensor]] = []

    def update(self, index: int, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Count one image (`index`: its row in the split)."""
        if not self.per_image:
            self.cm.update(pred, target)
            return
        one = ConfusionMatrix(self.cm.num_classes, self.cm.ignore_index, device=self.cm.matrix.device)
        one.update(pred, target)
        self.cm.matrix += one.matrix
        self._pending.append((int(index), one.matrix))
        if len(self._pending) >= self.FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            host = torch.stack([m for _, m in self._pending]).cpu().numpy()
            self._rows += [{"index": i, **image_scores(m, self.labels)} for (i, _), m in zip(self._pending, host)]
            self._pending.clear()

    @property
    def rows(self) -> list[dict[str, Any]]:
        """This process's image rows, in the order counted."""
        self._flush()
        return self._rows


EVALUATE_MODULE = str(Path(__file__).resolve().parent / "evaluate_metric" / "segkit_iou.py")
"""segkit's metric as an `evaluate` module, a local path: ``evaluate.load(EVALUATE_MODULE,
num_labels=C)`` works offline (the Hub's ``mean_iou`` needs the Hub). See that file's docstring."""

TRAINER_PAD_INDEX = -100
"""transformers.Trainer pads masks of different sizes with this when it joins batches: ignored."""


def preprocess_logits_for_metrics(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """For `transformers.Trainer(preprocess_logits_for_metrics=...)`: logits (B, C, h, w) -> class-id
    masks (B, H, W) at the labels' size. The Trainer then keeps masks, C times smaller than logits
    and what the metric counts. Models that return ``logits`` (SegFormer, UperNet, DPT, BEiT)."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits = torch.nn.functional.interpolate(logits.float(), size=tuple(labels.shape[-2:]), mode="bilinear",
                                             align_corners=False)
    return logits.argmax(1)


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`compute_metrics`' dict as flat scalars for loggers: mIoU, ..., foreground_mIoU, ...,
    iou_<class>. Undefined figures (absent classes) are left out, never NaN."""
    flat = {k: v for k, v in result["strict"].items()}
    flat.update({f"foreground_{k}": v for k, v in result["foreground"].items()})
    flat.update({f"iou_{name}": c["iou"] for name, c in result["per_class"].items()})
    return {k: float(v) for k, v in flat.items() if v is not None}


def compute_metrics_fn(labels: LabelSet):
    """A `compute_metrics` for `transformers.Trainer`, streaming into one confusion matrix.

    Pass it with ``preprocess_logits_for_metrics=preprocess_logits_for_metrics`` so that the
    Trainer keeps argmax masks, not logits. It works both ways the Trainer calls it: once with
    every mask, or with ``TrainingArguments(batch_eval_metrics=True)`` once per batch
    (``compute_result`` True on the last), which keeps nothing but the matrix. Pixels labelled
    255 or padded with -100 are ignored. Returns `flat_metrics`.
    """
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index)

    def score(eval_pred: Any, compute_result: bool | None = None) -> dict[str, float]:
        pred = torch.as_tensor(eval_pred.predictions).cpu()
        target = torch.as_tensor(eval_pred.label_ids).cpu().long()
        padded = (target == TRAINER_PAD_INDEX) | (pred == TRAINER_PAD_INDEX)
        cm.update(pred.masked_fill(padded, 0), target.masked_fill(padded, labels.ignore_index))
        if compute_result is False:  # batch_eval_metrics, not the last batch yet
            return {}
        result = flat_metrics(compute_metrics(cm.matrix, labels))
        cm.reset()
        return result

    return score
