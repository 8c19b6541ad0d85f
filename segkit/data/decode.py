"""Decode one row: a picture to RGB, a mask to a 2-D array of source class ids.

segkit decodes files itself instead of through `datasets.Image`, so that every format quirk is
handled in one place and every failure names the file:

- images: EXIF orientation applied; RGBA/LA/transparent palette dropped to RGB; CMYK, greyscale and
  palette converted; 16-bit greyscale scaled to 8-bit (PIL's own conversion clips it to white).
- masks: palette ("P") PNGs hold the class ids in their indices, so they are read with
  `np.array(img)` and never converted; 16-bit masks keep ids above 255; RGB masks are mapped to ids
  through a colour palette; a greyscale mask saved as RGB (R == G == B) is read from one channel.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import ExifTags, Image, ImageOps

from segkit.data.errors import DataError

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes read as images, by the folder source and by `segkit predict` (any case)."""


def location(value: Any, split: str, index: int) -> str:
    """A human name for a row: its file path when the source kept one, else split and row."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, Path)) else None
    return f"{path} ({split} row {index})" if path else f"{split} row {index}"


def undecoded(ds: Any) -> Any:
    """The same rows with every Image column left as {bytes, path}, so `read_image`/`read_label`
    decode them and a broken file becomes a DataError naming it (a skip, mid-run).

    A stream must be undecoded before any `map`, `rename_columns` included: datasets 5 decodes
    an IterableDataset's rows with the features they had when each map was added, so a cast made
    later does not reach a broken image decoded inside an earlier map. The streaming sources do
    it at load (`hub_datasets._hub_splits`); here it is a no-op for them.
    """
    import datasets  # here, not at the top: `segkit predict` reads files with this module alone

    features = ds.features or {}
    for column, feature in features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


MAX_PIXELS = 1_000_000_000
"""Pillow refuses images above 179 M pixels as decompression bombs; aerial and slide images are
larger than that, and these are the user's own files. segkit reads up to a billion pixels."""


def open_image(value: Any, where: str, decode: bool = True) -> Image.Image:
    """Open and (unless `decode` is False: the header alone) fully decode a file, so truncated
    files fail here and not deep inside a worker. Every failure is a DataError naming `where`."""
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)
    try:
        if isinstance(value, (str, Path)) and Path(value).is_file() and Path(value).stat().st_size == 0:
            raise DataError(f"{where}: empty file (0 bytes). Re-export or remove it.")
        if isinstance(value, Image.Image):
            img = value
        elif isinstance(value, dict) and value.get("bytes"):
            img = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            img = Image.open(value["path"])
        elif isinstance(value, (str, Path)):
            img = Image.open(value)
        else:
            raise DataError(f"{where}: the row holds no image data ({type(value).__name__}).")
        if decode:
            img.load()
        return img
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{where}: file not found. Check data.path and the image/mask folders.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: unreadable or truncated image file ({e}). Re-export or remove it.") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> an upright 8-bit RGB image of what it shows (a new object, file closed safe).

    EXIF orientation is applied (phone photos store rotation there, not in the pixels).
    """
    img.load()  # read now, so the caller may close the file
    out = _convert_rgb(_upright(img))
    return img.copy() if out is img else out


def _upright(img: Image.Image) -> Image.Image:
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (None, 1):
        return img  # exif_transpose would copy the pixels for nothing
    return ImageOps.exif_transpose(img)


def _convert_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode in _SIXTEEN_BIT or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 65535 -> 255; PIL's own convert("RGB") clips 16-bit to white
        elif img.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0  # a float image in [0, 1]
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # through RGBA so palette transparency is understood, then dropped
    return img.convert("RGB")


def read_image(value: Any, where: str) -> Image.Image:
    """A row's picture (or a file's) as an upright 8-bit RGB PIL image: CMYK, 16-bit, RGBA,
    palette and EXIF-rotated pictures included; a DataError saying why not otherwise."""
    return to_rgb(open_image(value, where))


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(height, width) from the file's header alone (EXIF rotation does not change the area)."""
    with open_image(path, where, decode=False) as img:
        return img.height, img.width


def read_label(value: Any, where: str, palette: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """A row's mask as an (H, W) array of non-negative integer source ids (uint8, or wider if needed)."""
    if isinstance(value, (np.ndarray, list)):
        arr = np.asarray(value)
    else:
        img = open_image(value, where)
        if img.mode == "P":
            arr = np.array(img)  # the indices are the ids; the palette is only for display
        elif img.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
            arr = np.array(img.convert("RGB")) if img.mode != "LA" else np.array(img)[..., 0]
        else:
            arr = np.array(img)
    if arr.ndim == 3:
        arr = _colour_mask_to_ids(arr, palette, where)
    if arr.ndim != 2:
        raise DataError(f"{where}: a mask must be a single-channel image of class ids, got shape {arr.shape}.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{where}: mask holds non-integer values; masks must hold class ids.")
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise DataError(f"{where}: mask holds negative values ({int(arr.min())}); class ids start at 0.")
    if arr.dtype != np.uint8 and arr.size and arr.max() <= 255:
        arr = arr.astype(np.uint8)
    return arr


def _colour_mask_to_ids(rgb: np.ndarray, palette: list[tuple[int, int, int]] | None, where: str) -> np.ndarray:
    """RGB mask -> ids by exact colour match (vectorised through sorted colour codes)."""
    rgb = rgb[..., :3].astype(np.int64)
    if palette is None:
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0].astype(np.uint8)  # greyscale ids saved as RGB
        raise DataError(f"{where}: this mask is an RGB colour image. Set data.palette to the [r, g, b] "
                        "colour of each class id so segkit can turn colours into ids.")
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in palette], dtype=np.int64)
    order = np.argsort(keys, kind="stable")  # a colour listed twice maps to its first (lowest) id
    pos = np.clip(np.searchsorted(keys[order], codes), 0, len(keys) - 1)
    unknown = keys[order][pos] != codes
    if unknown.any():
        code = int(codes[unknown][0])
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        raise DataError(f"{where}: mask colour {colour} is not in data.palette "
                        f"({int(unknown.sum())} pixels). Add it to the palette or fix the mask.")
    ids = order[pos]
    return ids.astype(np.uint8 if len(keys) <= 256 else np.uint16)


def read_palette(value: list[list[int]] | str) -> list[tuple[int, int, int]]:
    """`data.palette`: a list of [r, g, b] by class id, or a JSON/YAML/TXT ("r g b" lines) file."""
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise DataError(f"data.palette: file {path} not found.")
        text = path.read_text()
        if path.suffix.lower() == ".txt":
            value = [[int(v) for v in line.replace(",", " ").split()] for line in text.splitlines() if line.strip()]
        else:
            value = yaml.safe_load(text)  # YAML reads JSON too
    colours = [tuple(int(v) for v in c) for c in value or []]
    bad = [c for c in colours if len(c) != 3 or not all(0 <= v <= 255 for v in c)]
    if not colours or bad:
        raise DataError(f"data.palette: expected one [r, g, b] (0..255) per class id; bad entries: {bad[:3]}")
    if len(set(colours)) != len(colours):
        raise DataError("data.palette: two class ids share a colour; each id needs its own colour.")
    return colours  # type: ignore[return-value]
