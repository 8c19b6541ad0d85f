"""What `segkit predict` reads: files, folders (recursively) and glob patterns, each image named
by its path relative to the inputs' common folder; and the decoding of one file, which either
gives an upright 8-bit RGB picture or says why it cannot.

Decoding runs in DataLoader workers, so a broken file costs a worker a moment, never the run.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from segkit.data.decode import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class InputImage:
    path: Path
    rel: Path
    """Path relative to the inputs' common folder: how areas.csv and failures.csv name it."""
    out: Path
    """Relative name of its mask and overlay: `rel` with a .png suffix, or `rel` + .png when another
    input has the same stem in the same folder (photo.jpg beside photo.png)."""


class InputError(ValueError):
    """Inputs that cannot be predicted as given; the message says how to fix them."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _static_prefix(spec: str) -> Path:
    """The folder part of a glob pattern before its first wildcard: `photos/**/*.jpg` -> `photos`."""
    parts = Path(spec).parts
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return Path(*parts[:i]) if i else Path(".")
    return Path(spec)


def _expand(spec: str) -> tuple[Path, list[Path]]:
    """(the folder that names are relative to, the images) for one input argument."""
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        matches = glob.glob(os.path.expanduser(spec), recursive=True)
        return _static_prefix(os.path.expanduser(spec)), sorted(Path(p) for p in matches if _is_image(Path(p)))
    if path.is_dir():
        return path, sorted(p for p in path.rglob("*") if _is_image(p))
    if path.is_file():
        return path.parent, [path]
    raise InputError(f"{spec}: no such file or folder (and no glob pattern).")


def list_inputs(specs: list[str], output: Path) -> list[InputImage]:
    """Every image the arguments name, once, in a stable order. Refuses an output folder inside an
    input folder: a second run would predict the first run's masks."""
    roots, found = [], {}
    for spec in specs:
        root, images = _expand(spec)
        if not images:
            raise InputError(f"{spec}: no images ({', '.join(IMAGE_EXTENSIONS)}) found.")
        roots.append(root.resolve())
        for image in images:
            found.setdefault(image.resolve(), image)
    out = output.expanduser().resolve()
    for root in roots:
        if out == root or root in out.parents:
            raise InputError(f"--output {output} is inside the input folder {root}: the next run would read its "
                             "masks as images. Choose an output folder outside the inputs.")
    common = Path(os.path.commonpath([str(r) for r in roots])) if roots else Path(".")
    rels = [(path, resolved.relative_to(common)) for resolved, path in sorted(found.items())]
    stems = Counter(rel.with_suffix(".png") for _, rel in rels)
    return [InputImage(path, rel, rel.with_suffix(".png") if stems[rel.with_suffix(".png")] == 1 or
                       rel.suffix.lower() == ".png" else rel.with_name(rel.name + ".png")) for path, rel in rels]
