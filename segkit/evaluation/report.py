"""Evaluation reports on disk: metrics.json, a per-class Markdown table, a confusion plot, and
image | truth | prediction overlays; the paths come from `segkit.run_folder.Report`.

The table puts each class's share of the training pixels beside its scores, because the usual
reason a class scores badly is that the model barely saw it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segkit.evaluation.overlays import confusion_image, panel
from segkit.evaluation.per_image import write_per_image
from segkit.infer.segment import segment_images
from segkit.labels import LabelSet
from segkit.run_folder import Report, atomic_write, write_json, write_text


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


def write_report(
    report: Report | Path,
    metrics: dict[str, Any],
    matrix: Any,
    labels: LabelSet,
    train_share: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write metrics.json (metrics plus `extra`), per_class.md and confusion.png into `report`
    (a `Report`, or the folder for one)."""
    report = report if isinstance(report, Report) else Report(report)
    clash = set(metrics) & set(extra or {})
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite metrics; rename them.")
    write_json(report.metrics, {**metrics, **(extra or {})})
    md = f"# Per-class results\n\n{metrics['num_pixels']:,} scored pixels.\n\n"
    write_text(report.per_class, md + format_table(metrics, labels, train_share))
    image = confusion_image(matrix, labels, normalize="true")
    atomic_write(report.confusion, lambda p: image.save(p, format="PNG"))


def write_overlays(model: Any, dataset: Dataset, report: Report, count: int) -> None:
    """image | truth | prediction panels with a legend, for the first `count` samples, predicted
    exactly as `segkit predict` would."""
    for i in range(min(count, len(dataset))):
        image, truth = dataset.raw(i)
        pred = segment_images(model, [image])[0]
        picture = panel(image, truth, pred, model.labels, title=f"sample {i}")
        atomic_write(report.overlays / f"{i:03d}.png", lambda p: picture.save(p, format="PNG"))


def train_share(stats: Any) -> np.ndarray | None:
    """Each class's share of labelled training pixels, shown beside its IoU."""
    return stats.pixel_share(exclude_ignored=True) if stats is not None else None


def summary_line(metrics: dict) -> str:
    s, f = metrics["strict"], metrics["foreground"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    return f"mIoU {fmt(s['mIoU'])} (foreground {fmt(f['mIoU'])}), aAcc {fmt(s['aAcc'])}"


def environment() -> dict[str, str]:
    """The versions and machine that produced a report, for reading it later."""
    import platform

    import torch
    import transformers

    from segkit import __version__

    return {"segkit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})",
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def write_final_report(report: Report, results: dict[str, dict[str, Any]], headline: str, model: Any,
                       dataset: Dataset, share: np.ndarray | None, num_overlays: int, extra: dict[str, Any],
                       num_processes: int = 1) -> None:
    """The headline split's table, confusion plot and overlays; every split's figures in
    metrics.json; the table printed."""
    main = dict(results[headline])
    matrix = main.pop("matrix")
    rows = main.pop("per_image", None)
    others = {s: {k: v for k, v in m.items() if k not in ("matrix", "per_image")}
              for s, m in results.items() if s != headline}
    write_report(report, main, matrix, model.labels, train_share=share,
                 extra={"split": headline, "confusion_matrix": matrix, "other_splits": others,
                        "labels": model.labels.to_dict(), "train_share": share, "environment": environment(),
                        **extra})
    write_overlays(model, dataset, report, num_overlays)
    if rows is not None:
        write_per_image(report, rows, model, dataset)
    procs = f", {num_processes} processes" if num_processes > 1 else ""
    print(f"\nPer-class results on {headline} ({len(dataset)} images{procs}):")
    print(format_table(main, model.labels, share))
    print(summary_line(main))
