"""Readers: each turns one kind of dataset into the `Source` every later stage reads
(segkit/data/source.py).

hub.py: the Hub presets (ADE20K, sidewalk), any repo id, saved and streamed datasets;
folder.py: folders of images and id masks; synthetic.py: generated shapes for the quickstart.
"""
