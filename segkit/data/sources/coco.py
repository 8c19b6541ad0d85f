"""The `coco` and `coco_panoptic` formats: COCO instances JSON and COCO panoptic (PNG + segments_info).

`data.path` is one JSON file, or a folder whose `annotations/` (or itself) holds them; each file's
name gives its split (`instances_train2017.json` trains, `instances_val2017.json` validates). Images
are found as `file_name` says, under the folder, `images/`, `images/SPLIT/` or `SPLIT/`, else by name.

Source ids are the category ids, so they have the export's gaps (COCO's 1..90); id 0 is what no
annotation covers: `background` for instances, `unlabeled` (VOID, ignored) for panoptic. If a
category uses id 0 (Roboflow), every id is shifted up by one. Rasterising:
- instances in file order, later over earlier, each its polygons' union (pycocotools: clipped to
  the image, no holes) or its RLE (`counts` a list or a string; RLE may hold holes);
- `iscrowd: 1` regions become 255 (ignored), painted first, so a separate instance inside a crowd
  keeps its class; `data.keep_crowd: true` paints them as their class, in file order.
- panoptic: each pixel's segment id R + 256 G + 65536 B maps to its `category_id`; crowd segments
  as above; id 0 (void) stays 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.config.sections import DataConfig
from segkit.data.errors import DataError
from segkit.data.source import Source
from segkit.data.sources.annotated import Entry, Faults, ImageIndex, assign_splits, build_source, cache_key, split_of
from segkit.data.sources.rasterise import coco_polygon_mask, coco_rle_mask, paint
from segkit.labels import IGNORE_INDEX


def _json_files(path: Path, panoptic: bool) -> tuple[list[Path], Path]:
    """The annotation files and the export's root folder (where image paths start)."""
    if path.is_file():
        root = path.parent.parent if path.parent.name == "annotations" else path.parent
        return [path], root
    if not path.is_dir():
        raise DataError(f"data.path: {path} does not exist (a COCO JSON file or the export's folder).")
    folder = path / "annotations" if (path / "annotations").is_dir() else path
    files = sorted(folder.glob("*.json")) or sorted(path.rglob("_annotations.coco.json"))
    wanted = [f for f in files if f.name.startswith("panoptic")] if panoptic else \
        [f for f in files if not f.name.startswith(("panoptic", "captions", "person_keypoints", "image_info"))]
    if not wanted:
        raise DataError(f"data.path: no COCO {'panoptic ' if panoptic else ''}JSON in {folder}. Point data.path "
                        "at the annotation file itself.")
    return wanted, path


def _load(file: Path) -> dict:
    try:
        doc = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: not valid JSON ({e}).") from None
    if not isinstance(doc, dict) or "images" not in doc or "categories" not in doc:
        raise DataError(f"{file}: a COCO file needs 'images', 'annotations' and 'categories' "
                        "(a results list has no images; give the dataset's own file).")
    return doc


def _categories(docs: list[tuple[Path, dict]], panoptic: bool) -> tuple[dict[int, str], int]:
    cats: dict[int, str] = {}
    for _, doc in docs:
        for c in doc["categories"]:
            cats.setdefault(int(c["id"]), str(c["name"]))
    shift = 1 if 0 in cats else 0
    names = {0: "unlabeled" if panoptic else "background"} | {i + shift: n for i, n in sorted(cats.items())}
    if max(names) >= IGNORE_INDEX:
        raise DataError(f"{docs[0][0]}: category id {max(names)} is 255 or more; 255 means ignored in segkit. "
                        "Renumber the categories below 255.")
    return names, shift


def coco_source(cfg: DataConfig) -> Source:
    return _source(cfg, panoptic=False)


def coco_panoptic_source(cfg: DataConfig) -> Source:
    return _source(cfg, panoptic=True)


def _source(cfg: DataConfig, panoptic: bool) -> Source:
    files, root = _json_files(Path(cfg.path or "").expanduser(), panoptic)
    docs = [(f, _load(f)) for f in files]
    names, shift = _categories(docs, panoptic)
    key = cache_key(cfg, files, {"keep_crowd": cfg.keep_crowd, "panoptic": panoptic})

    def entries(faults: Faults) -> list[Entry]:
        found: list[Entry] = []
        for file, doc in docs:
            subset = file.stem.split("_", 1)[1] if "_" in file.stem else file.stem
            if file.name == "_annotations.coco.json":
                subset = file.parent.name  # Roboflow: train/_annotations.coco.json
            index = ImageIndex(root, file.parent)
            by_image: dict[int, list[dict]] = {}
            for a in doc.get("annotations") or []:
                by_image.setdefault(a.get("image_id"), []).append(a)
            known = {c["id"] for c in doc["categories"]}
            for img in doc["images"]:
                anns = by_image.get(img["id"], [])
                make = _panoptic_render if panoptic else _instances_render
                render = make(file, img, anns, known, shift, cfg.keep_crowd, root)
                found.append(Entry(img["file_name"], index.find(img["file_name"], subset), split_of(subset) or subset,
                                   int(img["height"]), int(img["width"]), render))
        return assign_splits(found, cfg.splits)

    ignore = [0] if panoptic else []
    return build_source(cfg, entries, key, names, ignore, Path(cfg.path or "").name)


def _instances_render(file: Path, img: dict, anns: list[dict], known: set[int], shift: int, keep_crowd: bool,
                      root: Path):
    def render(label: np.ndarray, faults: Faults) -> None:
        h, w = label.shape
        order = anns if keep_crowd else sorted(anns, key=lambda a: not a.get("iscrowd"))  # stable: crowds first
        for a in order:
            where = f"{file} annotation {a.get('id')} (image {img['file_name']})"
            if a.get("category_id") not in known:
                faults.fatal.append(f"{where}: category_id {a.get('category_id')} is not in 'categories'. "
                                    "Add the category or remove the annotation.")
                continue
            mask = _segmentation(a.get("segmentation"), h, w, where, faults)
            if mask is None:
                continue
            crowd = bool(a.get("iscrowd")) and not keep_crowd
            paint(label, mask, IGNORE_INDEX if crowd else int(a["category_id"]) + shift)
    return render


def _segmentation(seg, h: int, w: int, where: str, faults: Faults) -> np.ndarray | None:
    if isinstance(seg, str):  # panoptic_coco_detection_format writes the RLE dict as a Python repr
        try:
            seg = json.loads(seg.replace("'", '"'))
        except ValueError:
            faults.fatal.append(f"{where}: segmentation is a string that is not an RLE.")
            return None
    if not seg:
        faults.warnings.append(f"{where}: empty segmentation, nothing drawn.")
        return None
    if isinstance(seg, list):
        parts = [p for p in seg if len(p) >= 6]
        if len(parts) < len(seg):
            faults.warnings.append(f"{where}: {len(seg) - len(parts)} degenerate polygon part(s) "
                                   "(fewer than 3 points), left out.")
        return coco_polygon_mask(parts, h, w) if parts else None
    size = [int(v) for v in seg.get("size", [])]
    if size != [h, w]:
        faults.fatal.append(f"{where}: RLE size {size} differs from the image's {[h, w]}. Re-export the annotation.")
        return None
    counts = seg.get("counts")
    if isinstance(counts, list) and sum(counts) != h * w:
        faults.fatal.append(f"{where}: RLE counts sum to {sum(counts)} pixels, but the image has {h}x{w} = {h * w}. "
                            "Re-export the annotation.")
        return None
    try:
        return coco_rle_mask(seg, h, w)
    except (ValueError, TypeError) as e:
        faults.fatal.append(f"{where}: unreadable RLE ({e}).")
        return None


def _panoptic_render(file: Path, img: dict, anns: list[dict], known: set[int], shift: int, keep_crowd: bool,
                     root: Path):
    def render(label: np.ndarray, faults: Faults) -> None:
        if not anns:
            faults.warnings.append(f"{file}: image {img['file_name']} has no panoptic annotation; all void.")
            return
        ann = anns[0]
        png = _panoptic_png(file, ann["file_name"], root)
        if png is None:
            faults.fatal.append(f"{file}: panoptic PNG {ann['file_name']} not found (looked in {file.with_suffix('')}/). "
                                "Put the PNG folder beside the JSON, named like it.")
            return
        rgb = np.array(Image.open(png).convert("RGB"), dtype=np.uint32)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        if ids.shape != label.shape:
            faults.fatal.append(f"{png}: size {ids.shape[::-1]} differs from the image's {label.shape[::-1]}.")
            return
        segments = ann.get("segments_info") or []
        lut = {0: 0}
        for s in segments:
            if s["category_id"] not in known:
                faults.fatal.append(f"{png}: segment {s['id']} has category_id {s['category_id']}, not in 'categories'.")
                continue
            crowd = bool(s.get("iscrowd")) and not keep_crowd
            lut[int(s["id"])] = IGNORE_INDEX if crowd else int(s["category_id"]) + shift
        values, inverse = np.unique(ids, return_inverse=True)
        unknown = [int(v) for v in values if int(v) not in lut]
        if unknown:
            faults.fatal.append(f"{png}: segment ids {unknown[:5]} are in the PNG but not in segments_info.")
        label[...] = np.array([lut.get(int(v), 0) for v in values])[inverse.reshape(ids.shape)]
    return render


def _panoptic_png(file: Path, name: str, root: Path) -> Path | None:
    for folder in (file.with_suffix(""), file.parent / "panoptic", root / file.stem, file.parent):
        if (folder / name).is_file():
            return folder / name
    return None
