"""`segkit convert`: any source as a plain copy, single-channel id PNGs with `id2label.json`.

The folder reads back with `data.format: folder` (`images: images/{split}`, `masks:
annotations/{split}`, `class_names: id2label.json`). `hub=True` also writes `data/SPLIT-00000.parquet`
with `datasets.Image` columns `image` and `label` plus `id2label.json` at the root, which
`data.format: hub, data.path: FOLDER` (or the folder pushed to the Hub) loads back. Ids are the
SOURCE ids, unchanged: class selection stays a recipe's business. 255 stays 255 (ignored).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from segkit.config.sections import DataConfig
from segkit.data.decode import location, read_label, undecoded
from segkit.data.source import HUB_SPLIT_NAMES
from segkit.data.sources.annotated import save_label
from segkit.data.sources.hub_datasets import load_source


def convert(cfg: DataConfig, output: Path, hub: bool = False) -> Path:
    """Write every split of `cfg`'s source under `output`; returns `output`."""
    source = load_source(cfg)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "id2label.json").write_text(json.dumps({str(k): v for k, v in sorted(source.class_names.items())}, indent=1))
    for split, rows in source.splits.items():
        images, labels = [], []
        for i, row in enumerate(tqdm(undecoded(rows), desc=f"convert {split}", unit="img", disable=None)):
            mask = read_label(row["label"], location(row["label"], split, i), source.palette)
            src = Path(row["image"]["path"]) if isinstance(row["image"], dict) and row["image"].get("path") else None
            stem = f"{i:06d}_{src.stem}" if src else f"{i:06d}"
            image_out = output / "images" / split / f"{stem}{src.suffix if src else '.png'}"
            image_out.parent.mkdir(parents=True, exist_ok=True)
            if src is not None and src.is_file():
                shutil.copyfile(src, image_out)
            else:
                image_out.write_bytes(row["image"]["bytes"])
            label_out = output / "annotations" / split / f"{stem}.png"
            save_label(np.asarray(mask), label_out)
            images.append(str(image_out))
            labels.append(str(label_out))
        if hub:
            features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
            ds = datasets.Dataset.from_dict({"image": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in images],
                                             "label": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in labels]},
                                            features=features)
            (output / "data").mkdir(exist_ok=True)
            ds.to_parquet(str(output / "data" / f"{HUB_SPLIT_NAMES[split]}-00000-of-00001.parquet"))
    return output
