"""The `cvat` format: CVAT for images 1.1 XML (a task or a project export).

`data.path` is the XML file, or the export folder holding `annotations.xml` (or one XML per
subset). Class ids: 0 is `background`, then the labels of `<meta>` in their order (1, 2, ...).
Images are found at `images/SUBSET/NAME`, `images/NAME` or `NAME` beside the XML; names may hold
spaces and XML entities (`&amp;`), which the parser decodes. `<image subset="...">` (or the task's
`<subset>`) gives the split; `data.splits` maps subset names to splits.

Rasterising, as datumaro's CVAT-to-mask conversion: shapes sorted by `z_order` (higher on top),
file order breaking ties; `<polygon>` and `<box>` filled by pycocotools (clipped to the image, no
holes); `<mask rle left top width height>` decoded as CVAT writes it (run lengths, background
first, row-major in the box; its holes kept) and placed at the box; `<polyline>` left out unless
`data.polyline_width` > 0; `<points>` and `<tag>` have no area and are left out. `occluded` does not
change a mask: the visible shape is still drawn where it is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from segkit.config.sections import DataConfig
from segkit.data.errors import DataError
from segkit.data.source import Source, read_class_names
from segkit.data.sources.annotated import Entry, Faults, ImageIndex, assign_splits, build_source, cache_key
from segkit.data.sources.rasterise import coco_polygon_mask, cvat_rle_mask, paint, pil_shape_mask, place

AREA_SHAPES = ("polygon", "box", "mask", "polyline")


def _points(text: str) -> list[float]:
    return [float(v) for pair in text.split(";") if pair.strip() for v in pair.split(",")]


def cvat_source(cfg: DataConfig) -> Source:
    path = Path(cfg.path or "").expanduser()
    files = [path] if path.is_file() else sorted(path.glob("*.xml")) if path.is_dir() else []
    if not files:
        raise DataError(f"data.path: no CVAT XML at {path}. Point it at annotations.xml or the export's folder.")
    trees = []
    for f in files:
        try:
            trees.append((f, ET.parse(f).getroot()))
        except ET.ParseError as e:
            raise DataError(f"{f}: not valid XML ({e}). Re-export as 'CVAT for images 1.1'.") from None
    labels: list[str] = []
    for _, root in trees:
        for node in root.iter("label"):
            name = node.findtext("name")
            if name is not None and name not in labels:
                labels.append(name)
    if cfg.class_names is not None:
        labels = [n for n in read_class_names(cfg.class_names).values() if n != "background"]
    names = {0: "background"} | {i + 1: n for i, n in enumerate(labels)}
    value = {n: i for i, n in names.items()}
    key = cache_key(cfg, files, {"polyline_width": cfg.polyline_width, "names": names})

    def entries(faults: Faults) -> list[Entry]:
        found = []
        for f, root in trees:
            task_subsets = {t.findtext("id"): t.findtext("subset") or "" for t in root.iter("task")}
            index = ImageIndex(f.parent)
            for img in root.iter("image"):
                subset = img.get("subset") or task_subsets.get(img.get("task_id"), "") or f.stem
                name = img.get("name", "")
                found.append(Entry(name, index.find(name, subset), subset, int(img.get("height", 0)),
                                   int(img.get("width", 0)), _render(f, img, value, cfg.polyline_width)))
        return assign_splits(found, cfg.splits)

    return build_source(cfg, entries, key, names, [], path.stem if path.is_file() else path.name)


def _render(file: Path, img: ET.Element, value: dict[str, int], polyline_width: int):
    shapes = [s for s in img if s.tag in AREA_SHAPES and (s.tag != "polyline" or polyline_width > 0)]
    shapes = sorted(shapes, key=lambda s: int(s.get("z_order", 0) or 0))  # stable: file order breaks ties

    def render(label: np.ndarray, faults: Faults) -> None:
        h, w = label.shape
        for s in shapes:
            name = s.get("label", "")
            where = f"{file} image '{img.get('name')}' <{s.tag} label=\"{name}\">"
            if name not in value:
                faults.fatal.append(f"{where}: label '{name}' is not among the export's labels. Add it to the "
                                    "project's labels (or data.class_names), or relabel the shape.")
                continue
            if s.tag == "box":
                x0, y0, x1, y1 = (float(s.get(k, 0)) for k in ("xtl", "ytl", "xbr", "ybr"))
                if x1 <= x0 or y1 <= y0:
                    faults.warnings.append(f"{where}: degenerate box, left out.")
                    continue
                mask = coco_polygon_mask([[x0, y0, x1, y0, x1, y1, x0, y1]], h, w)
            elif s.tag == "polygon":
                pts = _points(s.get("points", ""))
                if len(pts) < 6:
                    faults.warnings.append(f"{where}: degenerate polygon ({len(pts) // 2} points), left out.")
                    continue
                mask = coco_polygon_mask([pts], h, w)
            elif s.tag == "polyline":
                pts = _points(s.get("points", ""))
                mask = pil_shape_mask("polyline", list(zip(pts[::2], pts[1::2])), h, w, line_width=polyline_width)
            else:
                left, top = int(float(s.get("left", 0))), int(float(s.get("top", 0)))
                bw, bh = int(float(s.get("width", 0))), int(float(s.get("height", 0)))
                counts = [int(v) for v in (s.get("rle") or "").split(",") if v.strip()]
                if sum(counts) != bw * bh:
                    faults.fatal.append(f"{where}: mask RLE covers {sum(counts)} pixels, but its box is {bw}x{bh} = "
                                        f"{bw * bh}. Re-export the task.")
                    continue
                mask = place(cvat_rle_mask(counts, bw, bh), left, top, h, w)
            paint(label, mask, value[name])

    return render
