"""Per-image scores on disk (per_image.csv) and the worst images per class (worst/*.png).

A per-class table says which class is weak, not why; the images that score worst for it usually
do (a wrong label, a tiny object, a neighbour class). The rows come from `evaluate(...,
per_image=True)`, which scores every image in the same pass as the split.

per_image.csv has one row per image: ``index`` (its row in the split), ``pixels`` (scored),
``pixel_acc``, ``mIoU`` (over the classes present in its truth or prediction), ``iou_<class>``
(empty where the class is in neither) and ``confused`` (the largest truth>prediction pixel
counts, such as ``circle>background:120; square>circle:8``).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from torch.utils.data import Dataset

from segkit.evaluation.overlays import panel
from segkit.infer.segment import segment_images
from segkit.labels import LabelSet
from segkit.run_folder import Report, atomic_write, write_text

WORST_PER_CLASS = 3
"""Images shown per class in the report's "worst images" section."""


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def format_confused(pairs: Sequence[Sequence[Any]]) -> str:
    return "; ".join(f"{t}>{p}:{n}" for t, p, n in pairs)


def parse_confused(text: str) -> list[tuple[str, str, int]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        pair, n = item.rsplit(":", 1)
        truth, pred = pair.split(">", 1)
        out.append((truth, pred, int(n)))
    return out


def per_image_csv(rows: Sequence[dict[str, Any]], labels: LabelSet) -> str:
    """The CSV text of `rows` (from `evaluate(..., per_image=True)`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["index", "pixels", "pixel_acc", "mIoU", *(f"iou_{n}" for n in labels.names), "confused"])
    for r in rows:
        writer.writerow([r["index"], r["pixels"], _number(r["pixel_acc"]), _number(r["mIoU"]),
                         *(_number(r["iou"].get(n)) for n in labels.names), format_confused(r["confused"])])
    return buf.getvalue()


def read_per_image(text: str, labels: LabelSet) -> list[dict[str, Any]]:
    """Rows back from per_image.csv, in the shape `evaluate` returns them."""
    value = lambda s: float(s) if s != "" else None  # noqa: E731
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        iou = {n: float(r[f"iou_{n}"]) for n in labels.names if r.get(f"iou_{n}", "") != ""}
        rows.append({"index": int(r["index"]), "pixels": int(r["pixels"]), "pixel_acc": value(r["pixel_acc"]),
                     "mIoU": value(r["mIoU"]), "iou": iou, "confused": parse_confused(r["confused"])})
    return rows


def worst_images(rows: Sequence[dict[str, Any]], labels: LabelSet, k: int = WORST_PER_CLASS) -> dict[str, list[int]]:
    """Class name -> indices of the `k` images where its IoU is lowest (ties: the earlier image).

    Only images where the class is in the truth or the prediction take part: elsewhere it has no
    IoU. A false positive (predicted, not in the truth) has IoU 0 and so comes first.
    """
    out = {}
    for name in labels.names:
        scored = [(r["iou"][name], r["index"]) for r in rows if name in r["iou"]]
        out[name] = [i for _, i in sorted(scored)[:k]]
    return out


def write_per_image(report: Report, rows: Sequence[dict[str, Any]], model: Any, dataset: Dataset,
                    k: int = WORST_PER_CLASS) -> None:
    """per_image.csv, and an image | truth | prediction panel of each worst image (each once,
    however many classes it is among the worst of), predicted as `segkit predict` would."""
    labels = model.labels
    write_text(report.per_image, per_image_csv(rows, labels))
    by_index = {r["index"]: r for r in rows}
    worst = worst_images(rows, labels, k)
    for index in sorted({i for indices in worst.values() for i in indices}):
        image, truth = dataset.raw(index)
        pred = segment_images(model, [image])[0]
        row = by_index[index]
        acc = "n/a" if row["pixel_acc"] is None else f"{row['pixel_acc']:.3f}"
        picture = panel(image, truth, pred, labels, title=f"sample {index}: pixel acc {acc}")
        atomic_write(report.worst_panel(index), lambda p: picture.save(p, format="PNG"))
