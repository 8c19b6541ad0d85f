"""Evaluation reports on disk: metrics.json, a per-class Markdown table, a confusion plot.

The table puts each class's share of the training pixels beside its scores, because the usual
reason a class scores badly is that the model barely saw it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from segkit.labels import LabelSet
from segkit.overlays import confusion_image


def _pct(value: float | None, undefined: str = "n/a") -> str:
    return undefined if value is None else f"{100 * value:.2f}"


def _share(value: float) -> str:
    # "<0.01%" rather than "0.00%": a rare class must not read as a class with no pixels at all.
    if value == 0:
        return "0%"
    return "<0.01%" if value < 1e-4 else f"{100 * value:.2f}%"


def _pipe_table(header: list[str], rows: list[list[str]], right: list[bool]) -> str:
    """A Markdown pipe table padded to column width, so it reads in a terminal as well."""
    cells = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
    widths = [max(3, *(len(r[k]) for r in cells)) for k in range(len(header))]

    def line(r: list[str]) -> str:
        padded = (c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, right))
        return "| " + " | ".join(padded) + " |"

    # "---:" right-aligns a column when rendered; the dashes pad the rule to the column width.
    dashes = (("-" * (w + 1) + ":") if rj else ("-" * (w + 2)) for w, rj in zip(widths, right))
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def format_table(metrics: dict[str, Any], labels: LabelSet, train_share: np.ndarray | None = None) -> str:
    """Per-class IoU / Acc / Dice in percent (and train pixel share), then strict and foreground means.

    Absent classes (no truth and no predicted pixels) read "absent". "n/a" accuracy means the
    class was predicted but has no truth pixels. Two pipe tables, since the means have other
    columns than the classes.
    """
    header = ["class", "IoU %", "Acc %", "Dice %"]
    share = None
    if train_share is not None:
        share = np.asarray(train_share, dtype=np.float64).ravel()
        if share.shape != (labels.num_classes,):
            raise ValueError(f"train_share has {share.size} values for {labels.num_classes} classes")
        header.append("train px share")
    rows = []
    for k, name in enumerate(labels.names):
        s = metrics["per_class"][name]
        if s["status"] == "absent":
            row = [name, "absent", "-", "-"]
        else:
            row = [name, _pct(s["iou"]), _pct(s["acc"]), _pct(s["dice"])]
        if share is not None:
            row.append(_share(float(share[k])))
        rows.append(row)
    per_class = _pipe_table(header, rows, [False] + [True] * (len(header) - 1))

    views = [("strict", f"strict (all {labels.num_classes} classes)")]
    if labels.background is None:
        views.append(("foreground", "foreground (= strict: no background class)"))
    else:
        views.append(("foreground", f"foreground ({labels.names[labels.background]} ignored)"))
    keys = ["mIoU", "mAcc", "mDice", "aAcc", "fwIoU"]
    summary_rows = [[title] + [_pct(metrics[v][k]) for k in keys] for v, title in views]
    summary = _pipe_table(["mean"] + [f"{k} %" for k in keys], summary_rows, [False] + [True] * len(keys))
    return f"{per_class}\n\n{summary}\n"


def json_default(obj: Any) -> Any:
    """numpy scalars and arrays, torch tensors and paths: what reports and run logs hold."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write beside `path`, then rename over it: a crash never leaves a half-written report."""
    # Same folder, so os.replace is a rename; not mkstemp, whose 0600 mode would stick to the report.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(
    out_dir: Path,
    metrics: dict[str, Any],
    matrix: Any,
    labels: LabelSet,
    train_share: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write out_dir/metrics.json (metrics plus `extra`), per_class.md and confusion.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clash = set(metrics) & set(extra or {})
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite metrics; rename them.")
    payload = {**metrics, **(extra or {})}
    # allow_nan=False: a NaN here is a bug upstream (undefined metrics are None), not a value.
    text = json.dumps(payload, indent=2, allow_nan=False, default=json_default) + "\n"
    _atomic_write(out_dir / "metrics.json", lambda p: p.write_text(text, encoding="utf-8"))

    md = f"# Per-class results\n\n{metrics['num_pixels']:,} scored pixels.\n\n"
    md += format_table(metrics, labels, train_share)
    _atomic_write(out_dir / "per_class.md", lambda p: p.write_text(md, encoding="utf-8"))

    image = confusion_image(matrix, labels, normalize="true")
    _atomic_write(out_dir / "confusion.png", lambda p: image.save(p, format="PNG"))
