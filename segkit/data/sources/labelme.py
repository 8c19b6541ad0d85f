"""The `labelme` format: a folder of labelme JSON files, one per image, read as labelme2voc reads them.

Class ids follow labelme2voc's `--labels labels.txt` (found in `data.path` or its parent, or given
as `data.class_names`): line by line, `__ignore__` becomes 255, `_background_` id 0, the rest 1, 2, ...
Without a list, id 0 is `_background_` and the labels found are numbered in sorted order.

Rasterising is labelme's own (`labelme.utils.shapes_to_label`): shapes are painted in file order,
so a later shape covers an earlier one; polygons, rectangles and circles are filled by PIL with
their outline; `mask` shapes place their base64 PNG at the box's top-left; lines, linestrips and
points are drawn as labelme draws them (10 px lines, 5 px points). A shape off the image is clipped.
`imageData` embedded in the JSON is used when the image file is absent (written once to the cache).
Sub-folders named like splits (train/, val/, test/) become splits; otherwise one pool, val held out.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.config.sections import DataConfig
from segkit.data.errors import DataError
from segkit.data.source import Source, read_class_names
from segkit.data.sources.annotated import (
    Entry,
    Faults,
    ImageIndex,
    assign_splits,
    build_source,
    cache_key,
    rasterised_dir,
    split_of,
)
from segkit.data.sources.rasterise import paint, pil_shape_mask, place
from segkit.labels import IGNORE_INDEX

IGNORE_LABELS = ("__ignore__",)
"""labelme's convention for regions to leave out of training."""
MIN_POINTS = {"polygon": 3, "rectangle": 2, "circle": 2, "line": 2, "linestrip": 2, "point": 1, "mask": 2}


def labelme_source(cfg: DataConfig) -> Source:
    root = Path(cfg.path or "").expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder of labelme JSON files.")
    files = sorted(root.rglob("*.json"))
    if not files:
        raise DataError(f"data.path: {root} holds no .json files; point it at the folder labelme saved into.")
    docs = {f: _read(f) for f in files}
    docs = {f: d for f, d in docs.items() if d is not None}
    names, value_of, listed = _classes(cfg, root, docs)
    key = cache_key(cfg, list(docs), {"names": names})

    def entries(faults: Faults) -> list[Entry]:
        found = [_entry(f, d, root, value_of, listed, faults, key) for f, d in docs.items()]
        return assign_splits(found, cfg.splits)

    return build_source(cfg, entries, key, names, [], root.name)


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and "shapes" in doc else None  # other JSON (labels, configs) is not labelme's


def _classes(cfg: DataConfig, root: Path, docs: dict[Path, dict]) -> tuple[dict[int, str], dict[str, int], bool]:
    """Source names by id, label -> value (255 for __ignore__), and whether a list was given."""
    if cfg.class_names is not None:
        lines = list(read_class_names(cfg.class_names).values())
    else:
        listing = next((p / "labels.txt" for p in (root, root.parent) if (p / "labels.txt").is_file()), None)
        lines = [x.strip() for x in listing.read_text().splitlines() if x.strip()] if listing else None
    listed = lines is not None
    if lines is None:
        found = sorted({s.get("label", "") for d in docs.values() for s in d["shapes"]} - set(IGNORE_LABELS))
        lines = ["_background_"] + [n for n in found if n != "_background_"]
    value_of = {n: IGNORE_INDEX for n in lines if n in IGNORE_LABELS}
    kept = [n for n in lines if n not in IGNORE_LABELS]
    if "_background_" not in kept:
        kept = ["_background_"] + kept  # id 0 is what no shape covers
    value_of |= {n: i for i, n in enumerate(kept)}
    value_of.setdefault("__ignore__", IGNORE_INDEX)
    return dict(enumerate(kept)), value_of, listed


def _entry(file: Path, doc: dict, root: Path, value_of: dict[str, int], listed: bool, faults: Faults, key: str) -> Entry:
    height, width = int(doc.get("imageHeight") or 0), int(doc.get("imageWidth") or 0)
    image = None
    if doc.get("imagePath"):
        candidate = (file.parent / doc["imagePath"]).resolve()
        image = candidate if candidate.is_file() and candidate.suffix.lower() != ".json" else None
        if image is None:
            image = ImageIndex(file.parent).find(Path(doc["imagePath"]).name)
    if image is None and doc.get("imageData"):
        data = base64.b64decode(doc["imageData"])
        with Image.open(io.BytesIO(data)) as img:
            suffix = ".png" if img.format == "PNG" else ".jpg"
        image = rasterised_dir(key) / "images" / f"{file.relative_to(root).with_suffix('')}{suffix}".replace("/", "__")
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(data)  # the bytes as embedded: no re-encoding
    if image is not None and not (height and width):
        with Image.open(image) as img:
            width, height = img.size
    split = split_of(file.relative_to(root).parts[0]) if len(file.relative_to(root).parts) > 1 else None

    def render(label: np.ndarray, faults: Faults) -> None:
        for k, shape in enumerate(doc["shapes"]):
            name, kind = shape.get("label", ""), shape.get("shape_type") or "polygon"
            where = f"{file} shape {k} ('{name}', {kind})"
            if name not in value_of:
                if listed:
                    faults.fatal.append(f"{where}: label '{name}' is not in the class list. Add it to labels.txt "
                                        "(or data.class_names), or relabel the shape.")
                continue
            points = shape.get("points") or []
            if len(points) < MIN_POINTS.get(kind, 1):
                faults.warnings.append(f"{where}: degenerate shape ({len(points)} points), left out.")
                continue
            if kind == "mask":
                (x1, y1), _ = np.asarray(points[:2]).astype(int)
                with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as m:
                    patch = np.array(m.convert("L")) > 0 if m.mode not in ("1", "L") else np.array(m).astype(bool)
                mask = place(patch, int(x1), int(y1), *label.shape)
            else:
                mask = pil_shape_mask(kind, points, *label.shape)
            paint(label, mask, value_of[name])

    return Entry(str(file), image, split or "train", height, width, render)
