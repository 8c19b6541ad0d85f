"""report.html: one self-contained page that says what to look at next.

Built only from files already in the report folder (metrics.json, per_image.csv, confusion.png,
overlays/, worst/) and, when the report belongs to a training run, the run's train_log.jsonl and
recipe.yaml. So `segkit report RUN` rebuilds it without the model or the data.

Self-contained means it opens from disk in any browser with nothing else: CSS and a few lines of
JS inline, pictures as data URIs (JPEG, downscaled, so a report of many panels stays a few MB),
curves as inline SVG, no fonts, no CDN, no server.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from segkit.evaluation.per_image import read_per_image, worst_images
from segkit.labels import LabelSet
from segkit.run_folder import Report, write_text

MAX_PICTURE_WIDTH = 960
"""Pictures are downscaled to this width before they are embedded."""

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px 48px;color:#1b1f24}
h1{font-size:22px;margin:20px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#6a737d}
img{max-width:100%;height:auto}figure{margin:8px 0}figcaption{font-size:13px;color:#444}
.worst{display:flex;flex-wrap:wrap;gap:12px}.worst figure{flex:1 1 320px;max-width:480px}
#gallery{display:flex;flex-wrap:wrap;gap:10px}.card{flex:0 0 260px;border:1px solid #ddd;padding:6px}
.curves{display:flex;flex-wrap:wrap;gap:12px}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#444}
"""

# Reorders the gallery's cards by the chosen score; cards keep their scores in data-* attributes.
_SORT_JS = """
function sortGallery(){
  var key=document.getElementById('sort').value.split(':'), g=document.getElementById('gallery');
  var cards=Array.prototype.slice.call(g.children);
  cards.sort(function(a,b){
    var x=parseFloat(a.dataset[key[0]]), y=parseFloat(b.dataset[key[0]]);
    if(isNaN(x)) x=Infinity; if(isNaN(y)) y=Infinity;
    return key[1]==='asc' ? x-y : y-x;
  });
  cards.forEach(function(c){g.appendChild(c);});
}
document.getElementById('sort').addEventListener('change',sortGallery);
sortGallery();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def data_uri(path: Path, max_width: int = MAX_PICTURE_WIDTH) -> str:
    """A picture file as a JPEG data URI, downscaled to `max_width`."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.width > max_width:
            img = img.resize((max_width, round(img.height * max_width / img.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool], cls: str = "") -> str:
    head = "".join(f'<th class="{"n" if n else ""}">{_e(h)}</th>' for h, n in zip(header, numeric))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if n else ""}">{_e(c)}</td>' for c, n in zip(r, numeric))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _share(value: float | None) -> str:
    if value is None:
        return "-"
    return "0%" if value == 0 else "<0.01%" if value < 1e-4 else f"{100 * value:.2f}%"


def per_class_section(metrics: dict[str, Any], labels: LabelSet) -> str:
    share = metrics.get("train_share")
    rows = []
    for k, name in enumerate(labels.names):
        s = metrics["per_class"][name]
        scores = ["absent", "-", "-"] if s["status"] == "absent" else [_pct(s["iou"]), _pct(s["acc"]), _pct(s["dice"])]
        rows.append([name, *scores, f"{s['gt_pixels']:,}", _share(share[k] if share else None)])
    table = _table(["class", "IoU %", "Acc %", "Dice %", "truth pixels", "train px share"], rows,
                   [False] + [True] * 5, "per-class")
    keys = ["mIoU", "mAcc", "mDice", "aAcc", "fwIoU"]
    means = _table(["mean", *(f"{k} %" for k in keys)],
                   [[view, *(_pct(metrics[view][k]) for k in keys)] for view in ("strict", "foreground")],
                   [False] + [True] * 5, "means")
    note = ('<p class="muted">foreground: pixels whose truth is background are left out; a foreground pixel '
            'predicted as background still counts as a miss.</p>')
    return f"<h2>Per-class results</h2>{table}{means}{note}"


def _svg_chart(points: Sequence[tuple[float, float]], title: str, width: int = 340, height: int = 200) -> str:
    """A line chart of (x, y) points as inline SVG, with the ranges written on its axes."""
    if not points:
        return ""
    left, right, top, bottom = 46, 10, 22, 26
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + (abs(y0) or 1) * 0.1
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: top + (y1 - y) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#0366d6"/>' for x, y in points) \
        if len(points) <= 40 else ""
    fmt = lambda v: f"{v:.3g}"  # noqa: E731
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{_e(title)}"><rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>'
            f'<text x="{left}" y="14" style="font-weight:600">{_e(title)}</text>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>'
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{fmt(y1)}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{fmt(y0)}</text>'
            f'<text x="{left}" y="{height - 8}">{fmt(x0)}</text>'
            f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {fmt(x1)}</text>'
            f'<polyline fill="none" stroke="#0366d6" stroke-width="1.5" points="{path}"/>{dots}</svg>')


def read_log(path: Path) -> list[dict[str, Any]]:
    """train_log.jsonl's records; a line cut by a crash (the last one) is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def curves_section(log: Sequence[dict[str, Any]]) -> str:
    loss = [(r["step"], r["loss"]) for r in log if "loss" in r and r.get("loss") is not None]
    lr = [(r["step"], r["lr"]) for r in log if "lr" in r and r.get("lr") is not None]
    miou = [(r["step"], r["eval"]["val/strict_mIoU"]) for r in log
            if isinstance(r.get("eval"), dict) and r["eval"].get("val/strict_mIoU") is not None]
    charts = [_svg_chart(loss, "training loss"), _svg_chart(lr, "learning rate"), _svg_chart(miou, "val mIoU")]
    body = "".join(c for c in charts if c) or '<p class="muted">The log holds no curves yet.</p>'
    return f'<h2>Training curves</h2><div class="curves">{body}</div>'


def _panels(report: Report) -> dict[int, Path]:
    """Index -> panel picture: the overlays (named by index) and the worst images."""
    found: dict[int, Path] = {}
    for folder in (report.overlays, report.worst):
        for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            if path.stem.isdigit():
                found[int(path.stem)] = path
    return found


def _scores_caption(row: dict[str, Any], focus: str | None = None) -> str:
    parts = [f"sample {row['index']}"]
    if focus is not None:
        parts.append(f"IoU {focus} {row['iou'][focus]:.3f}")
    parts.append(f"pixel acc {_pct(row['pixel_acc'])}%")
    parts.append(f"mIoU {_pct(row['mIoU'])}%")
    if row["confused"]:
        parts.append("confused: " + ", ".join(f"{t} as {p} ({n:,} px)" for t, p, n in row["confused"]))
    return " · ".join(parts)


def worst_section(rows: Sequence[dict[str, Any]], labels: LabelSet, panels: dict[int, Path],
                  uris: dict[int, str]) -> str:
    by_index = {r["index"]: r for r in rows}
    parts = ["<h2>Worst images per class</h2>",
             '<p class="muted">image | truth | prediction; the images where each class scores its lowest IoU.</p>']
    for name, indices in worst_images(rows, labels).items():
        figures = "".join(f'<figure><img alt="sample {i}" src="{uris[i]}"><figcaption>'
                          f'{_e(_scores_caption(by_index[i], name))}</figcaption></figure>'
                          for i in indices if i in panels)
        parts.append(f"<h3>{_e(name)}</h3>" + (f'<div class="worst">{figures}</div>' if figures
                                                else '<p class="muted">in no image</p>'))
    return "".join(parts)


def gallery_section(rows: Sequence[dict[str, Any]], panels: dict[int, Path], uris: dict[int, str]) -> str:
    by_index = {r["index"]: r for r in rows}
    cards = []
    for i in sorted(panels):
        r = by_index.get(i)
        miou = "" if r is None or r["mIoU"] is None else f"{r['mIoU']:.6f}"
        acc = "" if r is None or r["pixel_acc"] is None else f"{r['pixel_acc']:.6f}"
        caption = _scores_caption(r) if r else f"sample {i}"
        cards.append(f'<div class="card" data-index="{i}" data-miou="{miou}" data-acc="{acc}">'
                     f'<img alt="sample {i}" src="{uris[i]}"><div>{_e(caption)}</div></div>')
    control = ('<label>sort by <select id="sort"><option value="miou:asc">mIoU, worst first</option>'
               '<option value="miou:desc">mIoU, best first</option><option value="acc:asc">pixel accuracy, '
               'worst first</option><option value="index:asc">image index</option></select></label>')
    return f'<h2>Gallery</h2>{control}<div id="gallery">{"".join(cards)}</div>'


def per_image_table(rows: Sequence[dict[str, Any]], labels: LabelSet) -> str:
    body = [[r["index"], f"{r['pixels']:,}", _pct(r["pixel_acc"]), _pct(r["mIoU"]),
             *(_pct(r["iou"][n]) if n in r["iou"] else "" for n in labels.names),
             "; ".join(f"{t}>{p}: {n:,}" for t, p, n in r["confused"])] for r in rows]
    header = ["index", "pixels", "pixel acc %", "mIoU %", *(f"IoU {n} %" for n in labels.names), "most confused"]
    numeric = [True] * (4 + labels.num_classes) + [False]
    return (f"<details><summary>All {len(rows)} images (per_image.csv)</summary>"
            f"{_table(header, body, numeric, 'per-image')}</details>")


def mapping_section(labels: LabelSet) -> str:
    rows = [[k, name, ", ".join(labels.sources[k]) if labels.sources else "(not recorded)"]
            for k, name in enumerate(labels.names)]
    ignored = ", ".join(labels.ignored_sources) or "none"
    return (f"<h2>Class mapping</h2>{_table(['id', 'class', 'source classes'], rows, [True, False, False], 'mapping')}"
            f'<p>Ignored (255): {_e(ignored)}</p>')


def build_html(report: Report) -> str:
    """The page for `report`, from its files (see the module docstring)."""
    if not report.metrics.is_file():
        raise FileNotFoundError(f"{report.metrics} is missing: run `segkit evaluate` (or train) first.")
    metrics = json.loads(report.metrics.read_text(encoding="utf-8"))
    if "labels" not in metrics:
        raise ValueError(f"{report.metrics} has no label set (written by an older segkit): run "
                         "`segkit evaluate` again to write a report that can be rebuilt.")
    labels = LabelSet.from_dict(metrics["labels"])
    rows = read_per_image(report.per_image.read_text(encoding="utf-8"), labels) if report.per_image.is_file() else []
    run = report.run()
    panels = _panels(report)
    uris = {i: data_uri(p) for i, p in panels.items()}

    title = metrics.get("recipe") or (run.root.name if run else report.root.name)
    s, f = metrics["strict"], metrics["foreground"]
    tta = metrics.get("tta") or "none"
    head = (f"<h1>{_e(title)}: {_e(metrics.get('split', ''))}</h1><p>mIoU <b>{_pct(s['mIoU'])}%</b> "
            f"(foreground {_pct(f['mIoU'])}%), aAcc {_pct(s['aAcc'])}% over {metrics['num_pixels']:,} pixels"
            f"{' and ' + str(len(rows)) + ' images' if rows else ''}. Test-time augmentation: {_e(tta)}."
            + (f" Model: {_e(metrics['model'])}." if metrics.get("model") else "") + "</p>")
    parts = [head, per_class_section(metrics, labels)]
    if report.confusion.is_file():
        parts.append(f'<h2>Confusion matrix</h2><p class="muted">rows: truth, normalised; columns: prediction</p>'
                     f'<img id="confusion" alt="confusion matrix" src="{data_uri(report.confusion, 1400)}">')
    if run is not None and run.log_file.is_file():
        parts.append(curves_section(read_log(run.log_file)))
    if rows:
        parts.append(worst_section(rows, labels, panels, uris))
    parts.append(gallery_section(rows, panels, uris))
    if rows:
        parts.append(per_image_table(rows, labels))
    if run is not None and run.recipe.is_file():
        parts.append(f"<h2>Recipe</h2><pre>{_e(run.recipe.read_text(encoding='utf-8'))}</pre>")
    parts.append(mapping_section(labels))
    env = metrics.get("environment") or {}
    parts.append("<h2>Environment</h2>" + _table(["", ""], env.items(), [False, False], "environment"))
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'  # no favicon request: the page asks for nothing
            f"<title>segkit report: {_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(parts) + f"<script>{_SORT_JS}</script></body></html>\n")


def write_html(report: Report | str | Path) -> Path:
    """Write report.html into `report` (a `Report`, a run folder or an eval-SPLIT folder)."""
    report = report if isinstance(report, Report) else Report(report)
    write_text(report.html, build_html(report))
    return report.html
