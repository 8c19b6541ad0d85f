"""The annotation-tool readers by `data.format`, one module each (see annotated.py for what they share)."""

from __future__ import annotations

from segkit.data.sources.coco import coco_panoptic_source, coco_source
from segkit.data.sources.colour_masks import mask_folder_source
from segkit.data.sources.cvat import cvat_source
from segkit.data.sources.label_studio import label_studio_source
from segkit.data.sources.labelme import labelme_source

EXPORT_LOADERS = {"coco": coco_source, "coco_panoptic": coco_panoptic_source, "labelme": labelme_source,
                  "cvat": cvat_source, "cvat_mask": mask_folder_source, "label_studio": label_studio_source,
                  "voc": mask_folder_source, "colour_masks": mask_folder_source}
"""`data.format` -> reader of that tool's export, as the tool wrote it."""
