"""The annotation-tool readers by `data.format`, one module each (see annotated.py for what they share)."""

from __future__ import annotations

from segkit.data.sources.coco import coco_panoptic_source, coco_source
from segkit.data.sources.labelme import labelme_source

EXPORT_LOADERS = {"coco": coco_source, "coco_panoptic": coco_panoptic_source, "labelme": labelme_source}
"""`data.format` -> reader of that tool's export, as the tool wrote it."""
