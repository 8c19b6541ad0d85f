"""`segkit predict`: a folder of images -> masks, overlays and per-image class areas.

    OUT/
      masks/NAME.png      single-channel training ids (what the model predicts; no 255)
      overlays/NAME.png   the image with the classes tinted, and a legend of those it shows
      areas.csv           per image: the share of pixels of each class
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from segkit.data.decode import IMAGE_EXTENSIONS, to_rgb
from segkit.inference import predict_masks
from segkit.models import load_model
from segkit.overlays import blend, legend



def list_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such image or folder.")
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found.")
    return found


def read_rgb(path: Path) -> Image.Image:
    """EXIF-rotated, any mode (RGBA, CMYK, palette, 16-bit) to 8-bit RGB."""
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except OSError as e:
        raise ValueError(f"{path}: cannot read this image ({e}). Is the file complete?") from None


def _batches(paths: list[Path], batch_size: int) -> Iterator[list[Path]]:
    for i in range(0, len(paths), batch_size):
        yield paths[i : i + batch_size]


def with_legend(overlay: Image.Image, mask: np.ndarray, labels) -> Image.Image:
    """The tinted image with a legend of the classes it shows stacked below it."""
    shown = [i for i in np.unique(mask).tolist() if i != labels.background]  # background is left untinted
    if not shown:
        return overlay
    key = legend(labels, present=shown, max_width=overlay.width)
    canvas = Image.new("RGB", (overlay.width, overlay.height + key.height), "white")
    canvas.paste(overlay, (0, 0))
    canvas.paste(key, (0, overlay.height))
    return canvas


def _write(out: Path, rel: Path, img: Image.Image, mask: np.ndarray, labels, blend) -> list[str]:
    for sub in ("masks", "overlays"):
        (out / sub / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(out / "masks" / rel)
    with_legend(blend(img, mask, labels), mask, labels).save(out / "overlays" / rel)
    counts = np.bincount(mask.ravel(), minlength=labels.num_classes)[: labels.num_classes]
    return [str(rel)] + [f"{c / mask.size:.6f}" for c in counts]


@torch.inference_mode()
def predict_folder(model_path: str | Path, images: str | Path, output: str | Path, batch_size: int = 4) -> Path:
    """Predict every image under `images`; images of any size, masks at each image's own size,
    fed to the model exactly as its evaluation fed them (`segkit.inference`)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_path).to(device).eval()
    labels = model.labels
    root, out = Path(images), Path(output)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    paths = list_images(root)
    rows = []
    for group in tqdm(list(_batches(paths, batch_size)), desc="predict", unit="batch"):
        imgs = [read_rgb(p) for p in group]
        for path, img, mask in zip(group, imgs, predict_masks(model, imgs, device)):
            rel = path.relative_to(root).with_suffix(".png") if root.is_dir() else Path(path.stem + ".png")
            rows.append(_write(out, rel, img, mask, labels, blend))
    with open(out / "areas.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image"] + list(labels.names))
        writer.writerows(rows)
    print(f"Predicted {len(paths)} images -> {out} (masks/, overlays/, areas.csv)")
    return out
