"""The `voc`, `cvat_mask` and `colour_masks` formats: masks that are pictures, with a colour table.

- `voc`: Pascal VOC (`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/{train,val}.txt`).
  Palette PNGs hold the class id in their index, 255 being the void border (ignored); they are read
  by index, never by colour. Names: `labelmap.txt`, `class_names.txt` (labelme2voc) or VOC's 21.
- `cvat_mask`: CVAT Segmentation mask 1.1, the same layout with RGB `SegmentationClass/` PNGs and
  `labelmap.txt` (`label:color_rgb:parts:actions`, one line per class, id = line order).
- `colour_masks`: RGB masks with any colour table (`data.palette`): a `labelmap.txt`, a JSON/YAML
  map name -> [r, g, b], or a preset, `cityscapes` (cityscapesScripts' labels.py: ids are its
  labelIds, 0..33, so `classes.select: [7, 26]` is road and car as there) or `camvid` (the 32
  colours of label_colors.txt, ids in its line order: Animal 0 .. Void 30, Wall 31). Both presets
  are checked against the published tables (tests/test_colour_presets.py). Layout: VOC's if
  present, else `data.images` / `data.masks` as for `folder`.

Every table keeps its line order as ids. A colour already used by an earlier line cannot be told
apart in a mask, so that line's name becomes an alias of the earlier id and its own id is never
produced: Cityscapes' `unlabeled` (0) also covers ego vehicle, rectification border, out of roi and
static (1..4), `pole` (17) covers polegroup (18), `car` (26) covers license plate (-1).

A pixel whose colour is in no table is an error naming the colour, the file and the pixel count
(segkit/data/decode.py); it is never made background. Colour -> id happens when a mask is read.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from segkit.config.sections import DataConfig
from segkit.data.errors import DataError
from segkit.data.source import Source, read_class_names, unlabeled_ids
from segkit.data.sources.folder import folder_splits

VOC_NAMES = ("background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse "
             "motorbike person pottedplant sheep sofa train tvmonitor").split()
CITYSCAPES = [  # cityscapesScripts helpers/labels.py: name, id, colour (id order)
    ("unlabeled", (0, 0, 0)), ("ego vehicle", (0, 0, 0)), ("rectification border", (0, 0, 0)),
    ("out of roi", (0, 0, 0)), ("static", (0, 0, 0)), ("dynamic", (111, 74, 0)), ("ground", (81, 0, 81)),
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("parking", (250, 170, 160)),
    ("rail track", (230, 150, 140)), ("building", (70, 70, 70)), ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)), ("guard rail", (180, 165, 180)), ("bridge", (150, 100, 100)),
    ("tunnel", (150, 120, 90)), ("pole", (153, 153, 153)), ("polegroup", (153, 153, 153)),
    ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("caravan", (0, 0, 90)),
    ("trailer", (0, 0, 110)), ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32)),
    ("license plate", (0, 0, 142)),
]
CAMVID = [  # CamVid label_colors.txt (32 classes), in its order
    ("Animal", (64, 128, 64)), ("Archway", (192, 0, 128)), ("Bicyclist", (0, 128, 192)), ("Bridge", (0, 128, 64)),
    ("Building", (128, 0, 0)), ("Car", (64, 0, 128)), ("CartLuggagePram", (64, 0, 192)), ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)), ("Fence", (64, 64, 128)), ("LaneMkgsDriv", (128, 0, 192)),
    ("LaneMkgsNonDriv", (192, 0, 64)), ("Misc_Text", (128, 128, 64)), ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)), ("ParkingBlock", (64, 192, 128)), ("Pedestrian", (64, 64, 0)),
    ("Road", (128, 64, 128)), ("RoadShoulder", (128, 128, 192)), ("Sidewalk", (0, 0, 192)),
    ("SignSymbol", (192, 128, 128)), ("Sky", (128, 128, 128)), ("SUVPickupTruck", (64, 128, 192)),
    ("TrafficCone", (0, 0, 64)), ("TrafficLight", (0, 64, 64)), ("Train", (192, 64, 128)), ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)), ("Tunnel", (64, 0, 64)), ("VegetationMisc", (192, 192, 0)), ("Void", (0, 0, 0)),
    ("Wall", (64, 192, 0)),
]
PRESETS = {"cityscapes": CITYSCAPES, "camvid": CAMVID}


def fold_shared_colours(table: list[tuple[str, tuple[int, int, int]]]):
    """(names by id, palette, aliases): line k of the table is id k. A colour shared by several
    names is the first one's: the others become its aliases and their ids stay unused, so a mask's
    colour always means one id and the published ids (Cityscapes' labelIds) stay as published."""
    names: dict[int, str] = {}
    palette: list[tuple[int, int, int]] = []
    aliases: dict[int, list[str]] = {}
    for name, colour in table:
        colour = tuple(int(c) for c in colour)
        if colour in palette:
            aliases.setdefault(palette.index(colour), []).append(name)
        else:
            names[len(palette)] = name
        palette.append(colour)  # a repeated colour holds its id's place; decode maps it to the first id
    return names, palette, aliases


def read_labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """`labelmap.txt` (CVAT, datumaro VOC): `name:r,g,b:parts:actions`, comments start with #."""
    table = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        try:
            colour = tuple(int(v) for v in parts[1].split(","))
            assert len(colour) == 3 and all(0 <= c <= 255 for c in colour)
        except (IndexError, ValueError, AssertionError):
            raise DataError(f"{path} line {n}: expected 'name:r,g,b::', got {line!r}.") from None
        table.append((parts[0], colour))
    return table


def colour_table(value: str | list, root: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """`data.palette` for these formats: a preset name, a labelmap.txt, or a JSON/YAML name -> colour map."""
    if isinstance(value, str) and value.lower() in PRESETS:
        return PRESETS[value.lower()]
    if isinstance(value, str):
        path = Path(value).expanduser()
        path = path if path.is_file() else root / value
        if not path.is_file():
            raise DataError(f"data.palette: {value} is neither a preset ({', '.join(PRESETS)}) nor a file.")
        if path.suffix.lower() == ".txt":
            return read_labelmap(path)
        value = yaml.safe_load(path.read_text())  # YAML reads JSON too
    if isinstance(value, dict):
        try:
            return [(str(k), tuple(int(c) for c in v)) for k, v in value.items()]
        except (TypeError, ValueError):
            raise DataError("data.palette: a colour map must be name -> [r, g, b].") from None
    raise DataError("data.palette: give a preset (cityscapes, camvid), a labelmap.txt, or a name -> [r, g, b] map.")


def _voc_layout(root: Path) -> tuple[str, str, dict[str, str]] | None:
    if not (root / "SegmentationClass").is_dir():
        return None
    lists = root / "ImageSets" / "Segmentation"
    found = {}
    for ours, theirs in (("train", "train"), ("val", "val"), ("test", "test")):
        if (lists / f"{theirs}.txt").is_file():
            found[ours] = f"ImageSets/Segmentation/{theirs}.txt"
    if not found and (lists / "default.txt").is_file():
        found = {"train": "ImageSets/Segmentation/default.txt"}  # CVAT's single subset
    return "JPEGImages", "SegmentationClass", found


def mask_folder_source(cfg: DataConfig) -> Source:
    root = Path(cfg.path or "").expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: folder {root} does not exist.")
    layout = _voc_layout(root)
    if layout is None and cfg.format in ("voc", "cvat_mask"):
        raise DataError(f"data.path: {root} has no SegmentationClass/ folder; point it at the VOC-layout export "
                        "(the folder holding JPEGImages/ and SegmentationClass/).")
    images, masks, splits = layout or (cfg.images, cfg.masks, {})
    palette, aliases = None, {}
    if cfg.palette is not None:
        names, palette, aliases = fold_shared_colours(colour_table(cfg.palette, root))
    elif (root / "labelmap.txt").is_file():
        names, palette, aliases = fold_shared_colours(read_labelmap(root / "labelmap.txt"))
    elif cfg.format == "voc":
        given = cfg.class_names or (str(root / "class_names.txt") if (root / "class_names.txt").is_file() else None)
        names = read_class_names(given) if given else dict(enumerate(VOC_NAMES))
    else:
        raise DataError(f"{root}: no colour table. Set data.palette to a preset (cityscapes, camvid), a "
                        "labelmap.txt, or a name -> [r, g, b] map, or put labelmap.txt in the export.")
    if cfg.class_names is not None and palette is not None:
        names = read_class_names(cfg.class_names)
    orphans: dict[Path, Path] = {}
    rows = folder_splits(cfg, root, images, masks, splits or None, orphans)  # data.splits, when given, wins
    # A mask without its image is an annotated picture lost on the way (a renamed or unexported
    # file): fatal like a missing image in the shape formats, so no one trains on the rest unaware.
    faults = [f"{mask}: mask without an image (no {mask.stem}.* in {folder}). Add the image, or remove "
              "the mask if the picture was left out on purpose." for mask, folder in sorted(orphans.items())]
    return Source(rows, names, unlabeled_ids(names), root.name, aliases, palette=palette,
                  origin=f"{cfg.format}:{root.resolve()}:{palette}", faults=faults)
