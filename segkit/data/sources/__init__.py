"""Readers: each turns one kind of dataset into the `Source` every later stage reads
(segkit/data/source.py).

hub_datasets.py: `load_source`, the one dispatch by `data.format`, and the `datasets` readers (the
Hub presets ADE20K and sidewalk, any repo id, saved and streamed datasets); folder.py: folders of
images and id masks; synthetic.py: generated shapes for the quickstart; exports.py: the
annotation-tool exports (coco.py, cvat.py, label_studio.py, labelme.py, colour_masks.py), drawn
by rasterise.py into cached id masks (annotated.py).
"""
