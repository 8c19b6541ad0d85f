"""Sources: where rows come from, in one shape whatever the format.

`load_source(cfg)` returns a `Source` whose splits (train/val/test) have exactly two columns:
`image` (a picture) and `label` (a single-channel map of SOURCE class ids). Class selection
(`classes.py`) turns source ids into training ids later; nothing here renumbers labels.

Formats: `ade20k` and `sidewalk` (Hub presets, or a local copy), `hub` (any repo id or a local
folder of parquet files), `folder` (images + masks on disk, in `folder.py`), `disk`
(`save_to_disk`) and `synthetic`. Every Hub read goes through `hub_load`, which takes a local
directory of parquet files wherever it takes a repo id; the tests use exactly that path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from segkit.config.sections import DataConfig
from segkit.data.decode import undecoded
from segkit.data.errors import DataError
from segkit.data.source import (
    HUB_SPLIT_NAMES,
    Source,
    Split,
    class_names_for,
    detect_columns,
    hold_out_val,
    pick_splits,
    unlabeled_ids,
)
from segkit.data.sources.exports import EXPORT_LOADERS
from segkit.data.sources.folder import folder_source, folder_splits
from segkit.data.sources.synthetic import synthetic_source
from segkit.hub.explain import NETWORK_ERRORS, explain

log = logging.getLogger("segkit.data")

# What the presets read, as the real repos hold it (checked 2026-11 against the dataset viewer's
# source, datasets 5.2's source, and public code pinning these revisions; the Hub itself was not
# reachable from the machine that wrote this):
#
# zhoubolei/scene_parse_150
#   main                   scene_parse_150.py (a loading script) + README.md. datasets >= 4 refuses it:
#                          RuntimeError "Dataset scripts are no longer supported, but found scene_parse_150.py".
#   refs/convert/parquet   the viewer's export: .gitattributes, scene_parsing/{train,validation,test}/NNNN.parquet
#                          and instance_segmentation/{train,validation,test}/NNNN.parquet side by side; no README,
#                          no `configs:` (the branch is rewritten from the initial commit on each export).
#                          scene_parsing columns: image (Image), annotation (Image, L: 0 = other, 1..150 =
#                          objectInfo150), scene_category (ClassLabel); the test split has no annotations.
#   datasets builds one `default` config from such a branch: load_dataset(repo, "scene_parsing", ...) raises
#   "BuilderConfig 'scene_parsing' not found. Available: ['default']", and without a data_dir the two configs
#   mix and the cast fails. load_dataset(repo, data_dir="scene_parsing", revision="refs/convert/parquet") loads.
#   Licence: BSD-3-Clause.
# segments/sidewalk-semantic
#   Gated: log in and accept its terms first (anonymous: 401, logged in without accepting: 403, both
#   X-Error-Code: GatedRepo). One train split of 1,000 rows: pixel_values (Image, 1920x1080 JPEG) and label
#   (Image, L, ids 0..34), written by push_to_hub (README with dataset_info, data/train-*.parquet).
#   id2label.json at the repo root names ids 0..34 (0 = unlabeled, 21 = construction-fenceguardrail).
ADE20K_REPO, ADE20K_REVISION, ADE20K_DATA_DIR = "zhoubolei/scene_parse_150", "refs/convert/parquet", "scene_parsing"
SIDEWALK_REPO = "segments/sidewalk-semantic"
PRESET_REPOS = {"ade20k": ADE20K_REPO, "sidewalk": SIDEWALK_REPO}
"""The Hub dataset each preset format reads by default (model cards name it)."""
GATED_DATASETS = (SIDEWALK_REPO,)
"""Preset datasets that need accepted terms: pictures of them stay out of public model repos."""

# SceneParse150 (objectInfo150): id 1..150 in order; ";" separates a display name from its aliases.
# Id 0 is "other" (none of the 150) and is ignored by the standard protocol.
ADE20K_NAMES = (
    "wall|building;edifice|sky|floor;flooring|tree|ceiling|road;route|bed|windowpane;window|"
    "grass|cabinet|sidewalk;pavement|person;individual;someone;somebody;mortal;soul|earth;ground|"
    "door;double door|table|mountain;mount|plant;flora;plant life|"
    "curtain;drape;drapery;mantle;pall|chair|car;auto;automobile;machine;motorcar|water|"
    "painting;picture|sofa;couch;lounge|shelf|house|sea|mirror|rug;carpet;carpeting|field|"
    "armchair|seat|fence;fencing|desk|rock;stone|wardrobe;closet;press|lamp|"
    "bathtub;bathing tub;bath;tub|railing;rail|cushion|base;pedestal;stand|box|column;pillar|"
    "signboard;sign|chest of drawers;chest;bureau;dresser|counter|sand|sink|skyscraper|"
    "fireplace;hearth;open fireplace|refrigerator;icebox|grandstand;covered stand|path|"
    "stairs;steps|runway|case;display case;showcase;vitrine|"
    "pool table;billiard table;snooker table|pillow|screen door;screen|stairway;staircase|river|"
    "bridge;span|bookcase|blind;screen|coffee table;cocktail table|"
    "toilet;can;commode;crapper;pot;potty;stool;throne|flower|book|hill|bench|countertop|"
    "stove;kitchen stove;range;kitchen range;cooking stove|palm;palm tree|kitchen island|"
    "computer;computing machine;computing device;data processor;electronic computer;"
    "information processing system|swivel chair|boat|bar|arcade machine|hovel;hut;hutch;shack;shanty|"
    "bus;autobus;coach;charabanc;double-decker;jitney;motorbus;motorcoach;omnibus;passenger vehicle|"
    "towel|light;light source|truck;motortruck|tower|chandelier;pendant;pendent|"
    "awning;sunshade;sunblind|streetlight;street lamp|booth;cubicle;stall;kiosk|"
    "television receiver;television;television set;tv;tv set;idiot box;boob tube;telly;goggle box|"
    "airplane;aeroplane;plane|dirt track|apparel;wearing apparel;dress;clothes|pole|"
    "land;ground;soil|bannister;banister;balustrade;balusters;handrail|"
    "escalator;moving staircase;moving stairway|ottoman;pouf;pouffe;puff;hassock|bottle|"
    "buffet;counter;sideboard|poster;posting;placard;notice;bill;card|stage|van|ship|fountain|"
    "conveyer belt;conveyor belt;conveyer;conveyor;transporter|canopy|"
    "washer;automatic washer;washing machine|plaything;toy|"
    "swimming pool;swimming bath;natatorium|stool|barrel;cask|basket;handbasket|waterfall;falls|"
    "tent;collapsible shelter|bag|minibike;motorbike|cradle|oven|ball|food;solid food|step;stair|"
    "tank;storage tank|trade name;brand name;brand;marque|microwave;microwave oven|pot;flowerpot|"
    "animal;animate being;beast;brute;creature;fauna|bicycle;bike;wheel;cycle|lake|"
    "dishwasher;dish washer;dishwashing machine|screen;silver screen;projection screen|"
    "blanket;cover|sculpture|hood;exhaust hood|sconce|vase|"
    "traffic light;traffic signal;stoplight|tray|"
    "ashcan;trash can;garbage can;wastebin;ash bin;ash-bin;ashbin;dustbin;trash barrel;trash bin|"
    "fan|pier;wharf;wharfage;dock|crt screen|plate|monitor;monitoring device|"
    "bulletin board;notice board|shower|radiator|glass;drinking glass|clock|flag"
).split("|")

# segments/sidewalk-semantic's id2label.json, ids 0..34 (0 is unlabeled). The preset reads the repo's
# own file; this copy serves only a local copy of the data that lacks it.
SIDEWALK_NAMES = (
    "unlabeled flat-road flat-sidewalk flat-crosswalk flat-cyclinglane flat-parkingdriveway "
    "flat-railtrack flat-curb human-person human-rider vehicle-car vehicle-truck vehicle-bus "
    "vehicle-tramtrain vehicle-motorcycle vehicle-bicycle vehicle-caravan vehicle-cartrailer "
    "construction-building construction-door construction-wall construction-fenceguardrail "
    "construction-bridge construction-tunnel construction-stairs object-pole object-trafficsign "
    "object-trafficlight nature-vegetation nature-terrain sky void-ground void-dynamic void-static "
    "void-unclear"
).split()


def hub_load(path: str, config_name: str | None = None, revision: str | None = None, data_dir: str | None = None,
             streaming: bool = False) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """`load_dataset` on a Hub repo id, or on a local folder of data files laid out like one.

    `data_dir` picks a sub-folder (a config's folder on a parquet branch). A local folder takes no
    config name and no revision (datasets rejects them).
    """
    local = Path(path).expanduser()
    try:
        if local.is_dir():
            sub = data_dir if data_dir and (local / data_dir).is_dir() else None
            return datasets.load_dataset(str(local), data_dir=sub, streaming=streaming)
        return datasets.load_dataset(path, config_name, data_dir=data_dir, revision=revision, streaming=streaming)
    except (OSError, ValueError, RuntimeError) as e:  # gated, missing, offline, a loading script, bad config
        message = explain(e, path, "dataset", revision)
        raise DataError(message or f"Could not load the dataset '{path}': {e}") from None


def repo_file(path: str, filename: str, revision: str | None) -> Path | None:
    """A file at the root of a dataset repo (a Hub id, or a local copy); None when it has none."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local / filename if (local / filename).is_file() else None
    try:
        return Path(hf_hub_download(path, filename, repo_type="dataset", revision=revision))
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its base: offline, not a missing file
        raise DataError(explain(e, path, "dataset", revision) or str(e)) from None
    except EntryNotFoundError:
        return None
    except NETWORK_ERRORS as e:
        raise DataError(explain(e, path, "dataset", revision) or f"{path}: could not download {filename}: {e}") from None


def _hub_splits(cfg: DataConfig, path: str, where: str, preferred: dict[str, str] | None = None,
                revision: str | None = None, data_dir: str | None = None) -> dict[str, Split]:
    loaded = hub_load(path, cfg.config_name, revision, data_dir, cfg.streaming)
    chosen = pick_splits(list(loaded), cfg.splits or preferred or {}, where)
    if "train" not in chosen:
        raise DataError(f"{where}: no training split among {list(loaded)}; set data.splits, e.g. {{train: {list(loaded)[0]}}}.")
    # a stream is undecoded first, before the column renames (maps) that would decode it (decode.undecoded)
    splits = {ours: detect_columns(undecoded(loaded[theirs]) if cfg.streaming else loaded[theirs],
                                   cfg.image_column, cfg.label_column, where)
              for ours, theirs in chosen.items()}
    return hold_out_val(splits, cfg.val_fraction, cfg.seed)


def _ade20k(cfg: DataConfig) -> Source:
    """SceneParse150 from the Hub's parquet branch, a parquet mirror, or a local folder.

    - `data.path` unset: zhoubolei/scene_parse_150 at refs/convert/parquet, folder scene_parsing.
    - another repo id, or a local folder of parquet files: read as it is (`data.revision`,
      `data.data_dir` if given); a copy of the parquet branch (with scene_parsing/) reads its
      scene_parsing/ folder.
    - a local ADEChallengeData2016 (images/{training,validation}), or a flat images/ + annotations/
      pair (like shared/data/ade20k-samples), which is one pool split into train and a seeded
      `val_fraction` like any single-split source.
    Only train and validation are read: the test split has no annotations.
    """
    names = {0: "other"} | {i + 1: n.split(";")[0] for i, n in enumerate(ADE20K_NAMES)}
    aliases = {i + 1: n.split(";")[1:] for i, n in enumerate(ADE20K_NAMES) if ";" in n}
    path = cfg.path or ADE20K_REPO
    local = Path(path).expanduser()
    if (local / "ADEChallengeData2016").is_dir():
        local = local / "ADEChallengeData2016"
    if (local / "images").is_dir():
        layout = {"train": "training", "val": "validation"} if (local / "images" / "training").is_dir() else {}
        splits = folder_splits(cfg, local, "images/{split}" if layout else "images",
                               "annotations/{split}" if layout else "annotations", layout)
    else:
        official = path == ADE20K_REPO
        revision = cfg.revision or (ADE20K_REVISION if official else None)
        data_dir = cfg.data_dir or (ADE20K_DATA_DIR if official or (local / ADE20K_DATA_DIR).is_dir() else None)
        try:
            annotated = {k: v for k, v in HUB_SPLIT_NAMES.items() if k != "test"}  # ADE's test has no masks
            splits = _hub_splits(cfg, path, "ade20k", annotated, revision, data_dir)
        except DataError as e:
            raise DataError(
                f"{e}\nAlternatives: a parquet mirror of scene_parse_150 (`data.path: <repo id>`), or the "
                "official ADEChallengeData2016 download unpacked locally (`data.path: /path/to/"
                "ADEChallengeData2016`, with images/ and annotations/ inside).") from None
    return Source(splits, names, [0], "ade20k", aliases, origin=f"ade20k:{local.resolve() if local.is_dir() else path}")


def _sidewalk(cfg: DataConfig) -> Source:
    """segments/sidewalk-semantic (gated), or a copy of it: names from its id2label.json."""
    path = cfg.path or SIDEWALK_REPO
    names = class_names_for(cfg.class_names, lambda: _sidewalk_names(path, cfg.revision), path)
    splits = _hub_splits(cfg, path, "sidewalk", None, cfg.revision, cfg.data_dir)
    return Source(splits, names, unlabeled_ids(names), "sidewalk", origin=f"sidewalk:{path}:{cfg.revision}")


def _sidewalk_names(path: str, revision: str | None) -> dict[int, str] | None:
    names = _id2label(path, revision)
    if names is None and Path(path).expanduser().is_dir():
        log.info("%s has no id2label.json: using segkit's copy of segments/sidewalk-semantic's", path)
        return dict(enumerate(SIDEWALK_NAMES))
    return names


def _id2label(path: str, revision: str | None) -> dict[int, str] | None:
    """The repo's id2label.json (the convention of Hub segmentation datasets), if it has one."""
    file = repo_file(path, "id2label.json", revision)
    if file is None:
        return None
    try:
        return {int(k): str(v) for k, v in json.loads(file.read_text()).items()}
    except (ValueError, AttributeError) as e:
        raise DataError(f"{file}: expected a JSON object {{\"0\": \"name\", ...}} ({e}). "
                        "Fix it, or set data.class_names.") from None


def _hub(cfg: DataConfig) -> Source:
    if not cfg.path:
        raise DataError("data.path: format 'hub' needs a repo id (or a local folder of parquet files).")
    names = class_names_for(cfg.class_names, lambda: _id2label(cfg.path, cfg.revision), cfg.path)
    splits = _hub_splits(cfg, cfg.path, cfg.path, None, cfg.revision, cfg.data_dir)
    return Source(splits, names, unlabeled_ids(names), Path(cfg.path).name,
                  origin=f"hub:{cfg.path}:{cfg.config_name}:{cfg.data_dir}:{cfg.revision}")


def _disk(cfg: DataConfig) -> Source:
    root = Path(cfg.path or "").expanduser()
    if not root.exists():
        raise DataError(f"data.path: {root} does not exist (format 'disk' reads a save_to_disk folder).")
    try:
        saved = datasets.load_from_disk(str(root))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"data.path: {root} is not a dataset saved with save_to_disk ({e}).") from None
    groups = saved if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    chosen = pick_splits(list(groups), cfg.splits, str(root))
    if "train" not in chosen:
        raise DataError(f"{root}: no training split among {list(groups)}; set data.splits.")
    splits = {ours: detect_columns(groups[theirs], cfg.image_column, cfg.label_column, str(root))
              for ours, theirs in chosen.items()}
    splits = hold_out_val(splits, cfg.val_fraction, cfg.seed)
    names = class_names_for(cfg.class_names, lambda: _id2label(str(root), None), str(root))
    return Source(splits, names, unlabeled_ids(names), root.name, origin=f"disk:{root.resolve()}")


LOADERS = {"synthetic": synthetic_source, "ade20k": _ade20k, "sidewalk": _sidewalk, "hub": _hub,
           "folder": folder_source, "disk": _disk, **EXPORT_LOADERS}


def load_source(cfg: DataConfig, keep_faults: bool = False) -> Source:
    """Load the rows `cfg` points at, with train/val/test splits in the segkit schema.

    An annotation export with fatal faults (unknown label, missing image, bad RLE) is refused with
    the first few; `keep_faults=True` (what `segkit inspect` asks) returns them on the Source.
    """
    if cfg.format not in LOADERS:
        raise DataError(f"data.format: '{cfg.format}' is unknown. Choose one of: {', '.join(LOADERS)}")
    source = LOADERS[cfg.format](cfg)
    if source.faults and not keep_faults:
        listed = "\n  ".join(source.faults[:3])
        more = f"\n  ... and {len(source.faults) - 3} more" if len(source.faults) > 3 else ""
        raise DataError(f"{cfg.format} export {cfg.path}: {len(source.faults)} problem(s) to fix before training:"
                        f"\n  {listed}{more}\nRun `segkit inspect` on the recipe to list them all.")
    empty = [s for s, ds in source.splits.items() if isinstance(ds, datasets.Dataset) and len(ds) == 0]
    if empty:
        raise DataError(f"{source.name}: split(s) {empty} have no rows. Check data.path and data.splits.")
    return source


