"""The `label_studio` format: Label Studio's JSON export (a list of tasks, or one task per file).

`data.path` is the export file, or a folder of them. Each task's image (`data.image`, or the first
string in `data`) is found by its file name under the export's folder: an upload path
(`/data/upload/3/1a2b3c4d-photo.jpg`) also matches `photo.jpg`; `/data/local-files/?d=PATH` reads
PATH. Remote URLs are not downloaded: they are reported as missing images.

Class ids: 0 is `background`, then the `<Label value>`s of a labelling config beside the export
(`config.xml`, `label_config.xml`, `labeling_config.xml`) for the tag named `data.from_name` (or
every tag), in their order; without a config, the labels found, sorted. `data.from_name` also
limits which results are read. The first annotation that was not cancelled is used.

Rasterising, in result order (later over earlier): `polygonlabels` points are percent of the image
(x * width / 100), filled by pycocotools; `rectanglelabels` and `ellipselabels` (percent, with
`rotation` in degrees about the top-left corner for rectangles, as Label Studio draws them) as
polygons; `brushlabels` with `format: rle` are Label Studio's RLE of RGBA bytes, a pixel being
painted when its alpha is 128 or more. A result without `original_width/height` takes the image's
size. A brush and a labels result that share one `id` (the editor can save them split) are one shape.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image

from segkit.config.sections import DataConfig
from segkit.data.errors import DataError
from segkit.data.source import Source, read_class_names
from segkit.data.sources.annotated import Entry, Faults, ImageIndex, assign_splits, build_source, cache_key
from segkit.data.sources.rasterise import coco_polygon_mask, ls_rle_decode, paint

CONFIG_FILES = ("config.xml", "label_config.xml", "labeling_config.xml")
LABEL_KEYS = ("polygonlabels", "brushlabels", "rectanglelabels", "ellipselabels", "labels")
ALPHA_THRESHOLD = 128
"""Brush pixels at least half opaque are painted (Label Studio's brush edges are anti-aliased)."""


def _tasks(path: Path) -> tuple[list[Path], list[dict]]:
    files = [path] if path.is_file() else sorted(path.rglob("*.json")) if path.is_dir() else []
    tasks: list[dict] = []
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: not valid JSON ({e}).") from None
        for t in doc if isinstance(doc, list) else [doc]:
            if isinstance(t, dict) and "data" in t and ("annotations" in t or "completions" in t):
                tasks.append(t | {"_file": str(f)})
    if not tasks:
        raise DataError(f"data.path: no Label Studio tasks (objects with 'data' and 'annotations') in {path}. "
                        "Export the project as JSON and point data.path at that file.")
    return files, tasks


def _config_labels(folder: Path, from_name: str | None) -> list[str] | None:
    config = next((folder / n for n in CONFIG_FILES if (folder / n).is_file()), None)
    if config is None:
        return None
    root = ET.parse(config).getroot()
    labels: list[str] = []
    for tag in root.iter():
        if tag.tag.endswith("Labels") and (from_name is None or tag.get("name") == from_name):
            labels += [v for lab in tag.iter("Label") if (v := lab.get("value")) and v not in labels]
    return labels


def _results(task: dict, from_name: str | None) -> list[tuple[dict, str | None]]:
    """(geometry result, its label) in order; label-only results give their label to a same-id geometry."""
    annotations = [a for a in task.get("annotations") or task.get("completions") or [] if not a.get("was_cancelled")]
    results = [r for r in (annotations[0].get("result") or [] if annotations else [])
               if from_name is None or r.get("from_name") == from_name or r.get("type") == "brush"]
    labels_by_id = {}
    for r in results:
        for k in LABEL_KEYS:
            if (r.get("value") or {}).get(k):
                labels_by_id.setdefault(r.get("id"), r["value"][k][0])
    out = []
    for r in results:
        if r.get("type") == "labels":
            continue  # a label-only half of a split brush result
        out.append((r, labels_by_id.get(r.get("id"))))
    return out


def _image_name(task: dict) -> str:
    data = task["data"]
    value = data.get("image") or next((v for v in data.values() if isinstance(v, str)), "")
    parsed = urlparse(value)
    if "local-files" in parsed.path and "d" in parse_qs(parsed.query):
        return unquote(parse_qs(parsed.query)["d"][0])
    return unquote(parsed.path if parsed.scheme in ("http", "https", "s3", "gs") else value)


def label_studio_source(cfg: DataConfig) -> Source:
    path = Path(cfg.path or "").expanduser()
    files, tasks = _tasks(path)
    folder = path.parent if path.is_file() else path
    if cfg.class_names is not None:
        labels = [n for n in read_class_names(cfg.class_names).values() if n != "background"]
    else:
        labels = _config_labels(folder, cfg.from_name)
    listed = labels is not None
    if labels is None:
        labels = sorted({lab for t in tasks for _, lab in _results(t, cfg.from_name) if lab})
    names = {0: "background"} | {i + 1: n for i, n in enumerate(labels)}
    value = {n: i for i, n in names.items()}
    key = cache_key(cfg, files, {"from_name": cfg.from_name, "names": names})

    def entries(faults: Faults) -> list[Entry]:
        index, found = ImageIndex(folder), []
        for t in tasks:
            name = _image_name(t)
            image = index.find(name) or index.find(re.sub(r"^[0-9a-f]{8}-", "", Path(name).name))
            results = _results(t, cfg.from_name)
            w, h = next(((int(r["original_width"]), int(r["original_height"])) for r, _ in results
                         if r.get("original_width") and r.get("original_height")), (0, 0))
            if image is not None and not (w and h):
                with Image.open(image) as img:
                    w, h = img.size
            where = f"{t['_file']} task {t.get('id', '?')} ({name})"
            found.append(Entry(name, image, "train", h, w, _render(where, results, value, listed)))
        return assign_splits(found, cfg.splits)

    return build_source(cfg, entries, key, names, [], path.stem)


def _render(where: str, results: list[tuple[dict, str | None]], value: dict[str, int], listed: bool):
    def render(label: np.ndarray, faults: Faults) -> None:
        h, w = label.shape
        for r, name in results:
            kind, v = r.get("type", ""), r.get("value") or {}
            if name is None or kind not in ("polygonlabels", "brushlabels", "brush", "rectanglelabels", "ellipselabels"):
                continue  # keypoints, relations, choices: no area
            if name not in value:
                if listed:
                    faults.fatal.append(f"{where} result {r.get('id')}: label '{name}' is not in the labelling "
                                        "config. Add it to the config (or data.class_names), or relabel.")
                continue
            mask = _shape(kind, v, h, w, f"{where} result {r.get('id')}", faults)
            if mask is not None:
                paint(label, mask, value[name])

    return render


def _shape(kind: str, v: dict, h: int, w: int, where: str, faults: Faults) -> np.ndarray | None:
    if kind in ("brushlabels", "brush"):
        flat = ls_rle_decode(v.get("rle") or [])
        if flat.size != h * w * 4:
            faults.fatal.append(f"{where}: brush RLE holds {flat.size // 4} pixels, but the image is {w}x{h} = {w * h}. "
                                "Check original_width/height or the image.")
            return None
        return flat.reshape(h, w, 4)[..., 3] >= ALPHA_THRESHOLD
    if kind == "polygonlabels":
        pts = [c for x, y in v.get("points") or [] for c in (x * w / 100, y * h / 100)]
        if len(pts) < 6:
            faults.warnings.append(f"{where}: degenerate polygon ({len(pts) // 2} points), left out.")
            return None
        return coco_polygon_mask([pts], h, w)
    x, y = v.get("x", 0) * w / 100, v.get("y", 0) * h / 100
    if kind == "rectanglelabels":
        bw, bh, a = v.get("width", 0) * w / 100, v.get("height", 0) * h / 100, math.radians(v.get("rotation", 0))
        corners = [(0, 0), (bw, 0), (bw, bh), (0, bh)]
    else:  # ellipse: x, y is the centre, radiusX/radiusY in percent
        rx, ry, a = v.get("radiusX", 0) * w / 100, v.get("radiusY", 0) * h / 100, math.radians(v.get("rotation", 0))
        corners = [(rx * math.cos(t), ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    pts = [c for px, py in corners for c in (x + px * math.cos(a) - py * math.sin(a), y + px * math.sin(a) + py * math.cos(a))]
    if not any(pts[2:]) and not pts[0]:
        return None
    return coco_polygon_mask([pts], h, w)
