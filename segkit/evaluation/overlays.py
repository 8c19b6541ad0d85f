"""Pictures of masks: colorize, blend onto the image, legends, comparison panels, confusion plots.

Drawn with Pillow only. Conventions shared by every function here:

* ignored pixels (255) are black in a colorized mask and untinted in a blend;
* background is drawn in its palette colour by ``colorize`` but left untinted by ``blend``, so the
  classes the user chose stand out on the photo;
* text is white on a dark band, so it reads on any image.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segkit.labels import LabelSet

GAP = 4
"""Pixels between the columns of a panel."""
MAX_PANEL_HEIGHT = 512
"""Panels downscale each column to this height: a 2048 px image makes an unwieldy report."""

TEXT = (255, 255, 255)
BAND = (24, 24, 24)  # behind headers and legends
SWATCH_BORDER = (200, 200, 200)  # so dark swatches (background) still show on the band
INK, PAPER = (20, 20, 20), (255, 255, 255)  # the confusion plot is dark on white, for reports


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at `size` px; the fixed bitmap font where Pillow was built without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: tuple, face,
              anchor: str = "lt") -> None:
    """`text` placed by `anchor` (horizontal l/m/r, vertical t/m), computed here from its box: the
    bitmap fallback font takes no anchors of its own."""
    w, h = _text_size(text, face)
    dx = {"l": 0, "m": w / 2, "r": w}[anchor[0]]
    dy = {"t": 0, "m": h / 2}[anchor[1]]
    draw.text((xy[0] - dx, xy[1] - dy), text, fill=fill, font=face)


def _text_size(text: str, face) -> tuple[int, int]:
    left, top, right, bottom = face.getbbox(text)
    return int(right - min(left, 0)), int(bottom - min(top, 0))


def _rgb(image: np.ndarray | Image.Image) -> np.ndarray:
    """Any image (PIL, grey, RGBA, float in 0..1) as an (H, W, 3) uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.dtype != np.uint8:
        # Float images from a processor are 0..1 (or already 0..255): scale only the former.
        scale = 255.0 if a.dtype.kind == "f" and a.size and float(np.nanmax(a)) <= 1.0 else 1.0
        a = np.clip(a * scale, 0, 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"Expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    return a[..., :3]


def _palette_lut(labels: LabelSet) -> np.ndarray:
    """(256, 3) lookup from id to colour; 255 and unused ids are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: labels.num_classes] = np.asarray(labels.palette, dtype=np.uint8)
    return lut


def _check_mask(mask: np.ndarray, labels: LabelSet) -> np.ndarray:
    """Masks as (H, W) integer ids; other values are a labelling bug, not something to paint."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"Expected an (H, W) mask of class ids, got shape {mask.shape}")
    if mask.dtype.kind not in "iu":
        raise ValueError(f"Mask has dtype {mask.dtype}; masks hold integer ids (resize them with nearest).")
    valid = (mask < labels.num_classes) | (mask == labels.ignore_index)
    valid &= mask >= 0
    if not valid.all():
        bad = np.unique(mask[~valid])[:10].tolist()
        raise ValueError(
            f"Mask holds ids {bad} that are neither a class (0..{labels.num_classes - 1}) nor "
            f"{labels.ignore_index} (ignored)."
        )
    return mask


def colorize(mask: np.ndarray, labels: LabelSet) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 palette colours; ignored pixels (255) are black."""
    mask = _check_mask(mask, labels)
    return _palette_lut(labels)[mask.astype(np.intp)]


def blend(
    image: np.ndarray | Image.Image, mask: np.ndarray, labels: LabelSet, alpha: float = 0.5
) -> Image.Image:
    """Tint the image with the colour of each chosen class; alpha=1 paints the exact colour.

    Background and ignored pixels are left as the plain image: tinting them would wash the whole
    picture in one colour and hide the classes the user chose.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = _rgb(image)
    mask = _check_mask(mask, labels)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"Image is {rgb.shape[:2]} but mask is {mask.shape}; they must match (H, W).")
    tinted = mask != labels.ignore_index  # _check_mask let through only class ids and this
    if labels.background is not None:
        tinted &= mask != labels.background
    out = rgb.copy()
    colours = _palette_lut(labels)[mask[tinted].astype(np.intp)].astype(np.float32)
    mixed = (1.0 - alpha) * rgb[tinted].astype(np.float32) + alpha * colours
    out[tinted] = np.clip(mixed.round(), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def _legend_items(labels: LabelSet, present: Iterable[int] | None) -> list[int]:
    ids = range(labels.num_classes) if present is None else present
    return sorted({int(i) for i in ids if 0 <= int(i) < labels.num_classes})


def legend(
    labels: LabelSet,
    present: Iterable[int] | None = None,
    max_width: int | None = None,
    font_size: int = 14,
    ignored: bool = False,
) -> Image.Image:
    """Rows of colour swatch + class name, for `present` ids (all classes when None), and a black
    "ignored (255)" swatch when `ignored`.

    With `max_width`, entries flow left to right and wrap, which makes a strip to put under a
    panel; without it they stack in one column.
    """
    face = font(font_size)
    sw = font_size + 2  # swatch side
    pad = 6
    items = [(labels.names[i], tuple(labels.palette[i])) for i in _legend_items(labels, present)]
    items += [(f"ignored ({labels.ignore_index})", (0, 0, 0))] if ignored else []
    if not items:
        text = "no chosen class present"
        w, h = _text_size(text, face)
        img = Image.new("RGB", (max(max_width or 0, w + 2 * pad), h + 2 * pad), BAND)
        draw_text(ImageDraw.Draw(img), (pad, pad), text, TEXT, face)
        return img

    row_h = sw + pad
    positions, x, y = [], pad, pad  # (name, colour, x, y) of each swatch's top-left corner
    right = 0
    for name, colour in items:
        cell_w = sw + pad + _text_size(name, face)[0]
        if max_width is None:  # one column
            positions.append((name, colour, pad, y))
            y += row_h
        else:  # flow, wrapping before an entry that would cross max_width
            if x > pad and x + cell_w + pad > max_width:
                x, y = pad, y + row_h
            positions.append((name, colour, x, y))
            x += cell_w + 2 * pad
        right = max(right, positions[-1][2] + cell_w + pad)
    height = positions[-1][3] + row_h
    img = Image.new("RGB", (max(right, max_width or 0), height), BAND)
    draw = ImageDraw.Draw(img)
    for name, colour, x, y in positions:
        draw.rectangle([x, y, x + sw - 1, y + sw - 1], fill=colour, outline=SWATCH_BORDER)
        draw_text(draw, (x + sw + pad, y + sw // 2), name, TEXT, face, anchor="lm")
    return img


def _fit_height(img: Image.Image, max_height: int, resample: int) -> Image.Image:
    if img.height <= max_height:
        return img
    w = max(1, round(img.width * max_height / img.height))
    return img.resize((w, max_height), resample=resample)


def _mask_image(mask: np.ndarray) -> Image.Image:
    # A 2-D uint8 array becomes mode "L", which resizes with nearest exactly; _check_mask ran, so ids fit.
    return Image.fromarray(np.asarray(mask).astype(np.uint8))


def _header(
    text: str, width: int, font_size: int, fill: tuple = TEXT, background: tuple = BAND
) -> Image.Image:
    """A band as wide as `width` with `text` centred on it."""
    face = font(font_size)
    h = _text_size("Ag", face)[1] + 8
    band = Image.new("RGB", (width, h), background)
    draw_text(ImageDraw.Draw(band), (width // 2, h // 2), text, fill, face, anchor="mm")
    return band


def _stack(rows: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), BAND)
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def panel(
    image: np.ndarray | Image.Image,
    truth: np.ndarray | None,
    pred: np.ndarray,
    labels: LabelSet,
    title: str | None = None,
    alpha: float = 0.5,
    max_height: int = MAX_PANEL_HEIGHT,
) -> Image.Image:
    """image | truth overlay | prediction overlay (or image | prediction), with headers and a legend.

    Each column is downscaled to `max_height` first (masks with nearest, so no ids are invented).
    The legend lists the chosen classes present in the truth or the prediction.
    """
    rgb = Image.fromarray(_rgb(image))
    masks = {"truth": truth, "prediction": pred} if truth is not None else {"prediction": pred}
    for name, m in masks.items():
        m = _check_mask(m, labels)
        if m.shape != (rgb.height, rgb.width):
            raise ValueError(
                f"{name} mask is {m.shape} but the image is {(rgb.height, rgb.width)}; "
                "resize predictions to the image size first."
            )
    small = _fit_height(rgb, max_height, Image.Resampling.BILINEAR)
    columns = {"image": small}
    present: set[int] = set()
    for name, m in masks.items():
        m_small = np.asarray(_fit_height(_mask_image(m), max_height, Image.Resampling.NEAREST))
        columns[name] = blend(small, m_small, labels, alpha)
        # Counted at full size: a small object that the downscale drops still gets its swatch.
        counts = np.bincount(np.asarray(m, dtype=np.uint8).ravel(), minlength=256)
        present.update(np.flatnonzero(counts).tolist())
    present.discard(labels.background)  # untinted in the overlays, so a swatch would mislead

    w, h = small.size
    font_size = 16 if h >= 256 else 12
    width = len(columns) * w + (len(columns) - 1) * GAP
    row = Image.new("RGB", (width, h), BAND)
    headers = Image.new("RGB", (width, _header("x", 1, font_size).height), BAND)
    for k, (name, img) in enumerate(columns.items()):
        row.paste(img, (k * (w + GAP), 0))
        headers.paste(_header(name, w, font_size), (k * (w + GAP), 0))
    parts = [headers, row, legend(labels, present, max_width=width, font_size=font_size - 2)]
    if title:
        parts.insert(0, _header(title, width, font_size + 2))
    return _stack(parts)


def _heat(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> white-to-dark-blue RGB; NaN (no truth pixels) -> light grey."""
    lo, hi = np.array([247, 251, 255], np.float32), np.array([8, 48, 107], np.float32)
    v = np.nan_to_num(values, nan=0.0)[..., None]
    rgb = (lo + (hi - lo) * v).round().astype(np.uint8)
    rgb[np.isnan(values)] = (210, 210, 210)
    return rgb


def _grid(scaled: np.ndarray, cell: int) -> Image.Image:
    """The heatmap, one `cell`-pixel square per entry, with white separators between cells."""
    grid = np.repeat(np.repeat(_heat(scaled), cell, axis=0), cell, axis=1)
    grid[::cell] = 255  # so neighbouring cells of equal colour still read as two
    grid[:, ::cell] = 255
    return Image.fromarray(grid)


def _normalized(m: np.ndarray, normalize: str | None) -> tuple[np.ndarray, str]:
    """Matrix scaled for the colours, and the number format to print in cells."""
    if normalize == "true":  # rows: the fraction of each true class that went where
        den = m.sum(axis=1, keepdims=True)
    elif normalize == "pred":  # columns: what each prediction really was
        den = m.sum(axis=0, keepdims=True)
    elif normalize in (None, "none"):
        # Raw counts: colour on a log scale so small confusions still show beside the diagonal.
        top = np.log1p(m.max()) if m.size and m.max() > 0 else 1.0
        return np.log1p(m) / top, "count"
    else:
        raise ValueError(f"normalize must be 'true', 'pred' or None, got {normalize!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, m / np.where(den > 0, den, 1), np.nan), "ratio"


def _cell_text(value: float, count: float, kind: str) -> str:
    if kind == "count":  # short forms, so a count fits a cell
        for div, suffix in ((1e6, "M"), (1e3, "k")):
            if count >= div:
                return f"{count / div:.0f}{suffix}"
        return f"{int(count)}" if count else ""
    if np.isnan(value) or value == 0:
        return ""  # empty cells keep the non-zero confusions easy to spot
    return f"{value:.2f}".lstrip("0") if value < 1 else "1"


def confusion_image(
    matrix, labels: LabelSet, normalize: str | None = "true", title: str | None = None
) -> Image.Image:
    """Heatmap of the confusion matrix, truth on rows and prediction on columns, names on both axes.

    ``normalize="true"`` divides each row by its truth pixels (rows of absent classes are grey),
    ``"pred"`` divides columns, None shows counts. Cells print their values while the grid has at
    most 40 classes; past that the cells are too small to read, and only colours are drawn.
    """
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix, dtype=np.float64)
    c = labels.num_classes
    if m.shape != (c, c):
        raise ValueError(f"matrix has shape {m.shape}, expected ({c}, {c})")
    scaled, kind = _normalized(m, normalize)

    # Cells shrink as classes grow, so 30 classes still fit about 1000 px.
    cell = int(np.clip(1000 // c, 12, 44))
    name_font = font(max(9, min(14, cell - 2)))
    label_w = max(_text_size(n, name_font)[0] for n in labels.names) + 10
    axis = _header("prediction", c * cell, 14, INK, PAPER)  # axis title bands
    left = top = axis.height + label_w
    img = Image.new("RGB", (left + c * cell + 8, top + c * cell + 8), PAPER)
    img.paste(_grid(scaled, cell), (left, top))
    img.paste(axis, (left, 0))
    img.paste(_header("truth", c * cell, 14, INK, PAPER).rotate(90, expand=True), (0, top))
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(labels.names):  # truth names, right-aligned against the grid
        draw_text(draw, (left - 5, top + i * cell + cell // 2), name, INK, name_font, anchor="rm")
    # Prediction names run upwards: draw them on a strip, then rotate it.
    strip = Image.new("RGB", (label_w, c * cell), PAPER)
    for j, name in enumerate(labels.names):
        draw_text(ImageDraw.Draw(strip), (5, j * cell + cell // 2), name, INK, name_font, anchor="lm")
    img.paste(strip.rotate(90, expand=True), (left, axis.height))

    if c <= 40:  # past that the cells are too small to read: colours only
        value_font = font(max(8, min(13, cell // 3)))
        for i in range(c):
            for j in range(c):
                text = _cell_text(scaled[i, j], m[i, j], kind)
                if text:
                    # White on dark cells, black on light ones, so every value reads.
                    fill = PAPER if np.nan_to_num(scaled[i, j]) > 0.5 else INK
                    xy = (left + j * cell + cell // 2, top + i * cell + cell // 2)
                    draw_text(draw, xy, text, fill, value_font, anchor="mm")
    if title:
        img = _stack([_header(title, img.width, 14, INK, PAPER), img])
    return img
