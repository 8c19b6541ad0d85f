"""The `folder` format: images and masks on disk, paired by file name without extension.

Layout is given by two templates under `data.path`, where `{split}` is replaced by a split's folder
name (CamVid: `images: "{split}"`, `masks: "{split}annot"`). Splits come from `data.splits`
(segkit split -> folder name) or are found under the usual names (train/training,
val/validation/valid, test/testing). Without `{split}` the folders are one pool, which becomes
train with a seeded `val_fraction` held out; there `data.splits` may instead name stem-list files
(`{train: lists/train.txt}`, one file name per line, as in Pascal VOC's ImageSets).

`images`/`masks` may also point to .txt list files, one path per line (relative to the list's
folder or to `data.path`; the extension may be left out).

Rows are built with `Dataset.from_dict` over file paths with `datasets.Image` features, so a folder
source behaves like a Hub one (and errors can name the file).
"""

from __future__ import annotations

from pathlib import Path

import datasets

from segkit.config.sections import DataConfig
from segkit.data.decode import IMAGE_EXTENSIONS, read_palette
from segkit.data.errors import DataError
from segkit.data.source import SPLIT_ALIASES, Source, class_names_for, hold_out_val, unlabeled_ids


def folder_source(cfg: DataConfig) -> Source:
    """A Source over `data.path` laid out by `data.images` / `data.masks`."""
    root = Path(cfg.path or "").expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: folder {root} does not exist.")
    palette = read_palette(cfg.palette) if cfg.palette is not None else None
    fallback = (lambda: {i: f"class_{i}" for i in range(len(palette))}) if palette else (lambda: None)
    names = class_names_for(cfg.class_names, fallback, f"data.path {root}")
    if palette is not None and len(palette) < len(names):
        raise DataError(f"data.palette: {len(palette)} colours for {len(names)} class names; give one per id.")
    splits = folder_splits(cfg, root, cfg.images, cfg.masks)
    return Source(splits, names, unlabeled_ids(names), root.name, palette=palette,
                  origin=f"folder:{root.resolve()}:{cfg.images}:{cfg.masks}")


def folder_splits(cfg: DataConfig, root: Path, images: str, masks: str, layout: dict[str, str] | None = None,
                  orphans: dict[Path, Path] | None = None) -> dict[str, datasets.Dataset]:
    """Pair images with masks for every split found; hold out val if there is none. Masks whose
    name matches no image are left out, and put in `orphans` (mask -> the images folder searched)
    when the caller asks for them."""
    templated = "{split}" in images or "{split}" in masks
    mapping = dict(cfg.splits or layout or {})
    if not mapping:
        mapping = _detect_splits(root, images) if templated else {"train": ""}
    unknown = sorted(set(mapping) - set(SPLIT_ALIASES))
    if unknown:
        raise DataError(f"data.splits: {unknown} are not segkit splits; use train, val and test.")
    splits = {}
    for ours, theirs in mapping.items():
        stems = _stem_list(root, theirs) if theirs.endswith(".txt") else None
        sub = "" if stems is not None else theirs
        splits[ours] = _pairs(root, images.format(split=sub), masks.format(split=sub), stems, ours, orphans)
    if "train" not in splits:
        raise DataError(f"{root}: no training split among {sorted(splits)}; add a train folder or data.splits.")
    return hold_out_val(splits, cfg.val_fraction, cfg.seed)


def _detect_splits(root: Path, images: str) -> dict[str, str]:
    found = {}
    for ours, names in SPLIT_ALIASES.items():
        name = next((n for n in names if (root / images.format(split=n)).exists()), None)
        if name is not None:
            found[ours] = name
    if not found:
        example = images.format(split="train")
        raise DataError(f"{root}: no split folders found (looked for {root / example} and the val/test "
                        "equivalents). Set data.images/data.masks templates or data.splits.")
    return found


def _stem_list(root: Path, list_file: str) -> set[str]:
    path = root / list_file
    if not path.is_file():
        raise DataError(f"data.splits: stem list {path} not found.")
    return {Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()}


def _scan(root: Path, spec: str) -> dict[str, Path]:
    """File stem -> path for a folder (searched recursively) or a .txt list of paths."""
    target = root / spec
    if target.is_file() and target.suffix.lower() == ".txt":
        files = [_resolve_listed(line.strip(), target, root) for line in target.read_text().splitlines() if line.strip()]
    elif target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    else:
        raise DataError(f"{target} does not exist. Check data.path and the data.images/data.masks templates.")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise DataError(f"{target}: two files share the name '{f.stem}' ({by_stem[f.stem].name}, {f.name}); "
                            "images and masks are paired by name, so names must be unique.")
        by_stem[f.stem] = f
    return by_stem


def _resolve_listed(line: str, list_file: Path, root: Path) -> Path:
    for base in (list_file.parent, root):
        candidate = base / line
        for path in [candidate] + [candidate.with_name(candidate.name + e) for e in IMAGE_EXTENSIONS]:
            if path.is_file():
                return path
    raise DataError(f"{list_file}: listed file '{line}' not found next to the list or under {root}.")


def _pairs(root: Path, images: str, masks: str, stems: set[str] | None, split: str,
           orphans: dict[Path, Path] | None = None) -> datasets.Dataset:
    found_images, found_masks = _scan(root, images), _scan(root, masks)
    if orphans is not None:  # with a stem list, only its masks: an unlisted one is used by no split
        wanted = found_masks.keys() if stems is None else stems & found_masks.keys()
        orphans.update({found_masks[s]: root / images for s in wanted if s not in found_images})
    if stems is not None:
        found_images = {s: p for s, p in found_images.items() if s in stems}
    if not found_images:
        raise DataError(f"{root / images}: no images ({', '.join(IMAGE_EXTENSIONS)}) for split '{split}'.")
    orphans = sorted(set(found_images) - set(found_masks))
    if orphans:
        raise DataError(f"{len(orphans)} image(s) in {root / images} have no mask in {root / masks} "
                        f"(e.g. {', '.join(orphans[:3])}). Masks are paired with images by file name "
                        "without extension; add the masks or remove those images.")
    keys = sorted(found_images)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"image": [str(found_images[k]) for k in keys], "label": [str(found_masks[k]) for k in keys]},
        features=features)
