"""Shapes -> pixels, with the conventions of each tool's own converter.

One label map per image starts as 0 (`background`: pixels no shape covers) and shapes are painted
in draw order, later over earlier; a shape's value is its source id, or 255 for regions that must
be ignored (crowds by default, `__ignore__` shapes). What each format's draw order is, and which
filling rule it uses, is stated in the reader that calls these functions:

- `coco_polygon_mask` fills with pycocotools (COCO, CVAT, Label Studio): the rule COCO's own masks
  and datumaro's CVAT converter use. Several parts are a union; a polygon that runs off the image is
  clipped to it; a polygon has no holes (COCO and CVAT express holes only through RLE masks).
- `pil_polygon_mask` fills with PIL's `ImageDraw.polygon(outline=1, fill=1)`: labelme's
  `shape_to_mask`, so boundary pixels are included exactly as labelme2voc includes them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask


def paint(label: np.ndarray, mask: np.ndarray, value: int) -> None:
    """Draw one shape over what is there (later shapes win)."""
    label[mask.astype(bool)] = value


def coco_polygon_mask(parts: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union of polygon parts given as flat [x0, y0, x1, y1, ...] lists; parts with < 3 points are dropped
    by the caller (they are reported as degenerate)."""
    rles = coco_mask.frPyObjects([list(map(float, p)) for p in parts], height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def coco_rle_mask(rle: dict, height: int, width: int) -> np.ndarray:
    """COCO RLE with `counts` as a list (uncompressed) or a string (compressed)."""
    if isinstance(rle.get("counts"), list):
        rle = coco_mask.frPyObjects(rle, height, width)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    return coco_mask.decode(rle).astype(bool)


def pil_polygon_mask(points: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points], outline=1, fill=1)
    return np.array(image, dtype=bool)


def pil_shape_mask(kind: str, points: Sequence[Sequence[float]], height: int, width: int,
                   line_width: int = 10, point_size: int = 5) -> np.ndarray:
    """labelme's `shape_to_mask` for every shape type but `mask` (same PIL calls, same defaults)."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    xy = [tuple(p) for p in points]
    if kind == "circle":
        (cx, cy), (px, py) = xy[:2]
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy[:2]
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind in ("line", "linestrip", "polyline"):
        draw.line(xy=xy, fill=1, width=line_width)
    elif kind == "point":
        (cx, cy), r = xy[0], point_size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.array(image, dtype=bool)


def place(patch: np.ndarray, left: int, top: int, height: int, width: int) -> np.ndarray:
    """A box-local mask placed on the full image, clipped where the box runs off it."""
    full = np.zeros((height, width), dtype=bool)
    h, w = patch.shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if y1 > y0 and x1 > x0:
        full[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return full


def ls_rle_decode(rle: Sequence[int]) -> np.ndarray:
    """Label Studio's brush RLE (thi.ng rle-pack over RGBA bytes) -> the flat byte array.

    Header: 32 bits count, 5 bits word size - 1, four 4-bit run-length sizes - 1; then runs, each a
    flag bit (1 = repeat one word, 0 = literal words) and a 2-bit index into the sizes.
    """
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        chunk = bits[pos:pos + n]
        pos += n
        return int("".join(map(str, chunk.tolist())) or "0", 2)

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num and pos < len(bits):
        repeat = read(1)
        j = min(num, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            for k in range(i, j):
                out[k] = read(word)
            i = j
    return out


def cvat_rle_mask(counts: Sequence[int], width: int, height: int) -> np.ndarray:
    """CVAT's mask RLE: alternating run lengths, background first, row-major inside the box."""
    flat = np.zeros(int(sum(counts)), dtype=bool)
    pos = 0
    for k, n in enumerate(counts):
        if k % 2:
            flat[pos:pos + n] = True
        pos += n
    return flat[: width * height].reshape(height, width) if flat.size >= width * height else flat
