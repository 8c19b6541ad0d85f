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
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from segkit.config import DataConfig
from segkit.data.decode import read_image, read_label, to_rgb  # noqa: F401  (how rows are read; predict uses to_rgb)
from segkit.data.errors import DataError

Split = datasets.Dataset | datasets.IterableDataset
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("validation", "val", "valid"), "test": ("test", "testing")}
"""segkit split name -> source split names it is found under, in order of preference."""
IMAGE_COLUMNS = ("image", "pixel_values", "img")
LABEL_COLUMNS = ("annotation", "label", "mask", "segmentation", "semantic", "semantic_segmentation")
UNLABELED_NAMES = ("unlabeled", "unlabelled", "void", "ignore", "ignored", "other", "undefined")
"""Source class names taken to mean "not annotated": their pixels become 255 unless selected."""
STREAM_VAL_ROWS = 200
"""Rows held out as `val` from a streamed train-only source whose size the Hub does not report."""

ADE20K_REPO, ADE20K_CONFIG, ADE20K_REVISION = "zhoubolei/scene_parse_150", "scene_parsing", "refs/convert/parquet"
SIDEWALK_REPO = "segments/sidewalk-semantic"

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
    "television;television receiver;television set;tv;tv set;idiot box;boob tube;telly;goggle box|"
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

# segments/sidewalk-semantic, ids 0..34; 0 is unlabeled.
SIDEWALK_NAMES = (
    "unlabeled flat-road flat-sidewalk flat-crosswalk flat-cyclinglane flat-parkingdriveway "
    "flat-railtrack flat-curb human-person human-rider vehicle-car vehicle-truck vehicle-bus "
    "vehicle-tramtrain vehicle-motorcycle vehicle-bicycle vehicle-caravan vehicle-cartrailer "
    "construction-building construction-door construction-wall construction-fence "
    "construction-bridge construction-tunnel construction-stairs object-pole object-trafficsign "
    "object-trafficlight nature-vegetation nature-terrain sky void-ground void-dynamic void-static "
    "void-unclear"
).split()


@dataclass
class Source:
    """Rows of a dataset in one schema, plus what its label ids mean.

    Every split has exactly the columns `image` and `label`; `label` holds SOURCE class ids
    (ADE20K: 0 other, 1..150 classes), which `select_classes` maps to training ids.
    """

    splits: dict[str, Split]
    """Keys among train/val/test."""
    class_names: dict[int, str]
    """Source id -> display name."""
    ignore_ids: list[int]
    """Source ids meaning unlabeled/other: they become 255 unless explicitly selected."""
    name: str
    """Short name for reports and caches, e.g. `ade20k`."""
    aliases: dict[int, list[str]] = field(default_factory=dict)
    """Extra names a class can be selected by (ADE20K `window` for `windowpane`)."""
    palette: list[tuple[int, int, int]] | None = None
    """Colour of each source id when masks are RGB images (`folder` format with `data.palette`)."""
    origin: str = ""
    """Format, path and revision: what identifies the data for the statistics cache."""


def hub_load(path: str, config_name: str | None = None, revision: str | None = None,
             streaming: bool = False) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """`load_dataset` on a Hub repo id, or on a local directory of parquet files laid out like one.

    A local directory takes no config name (datasets rejects it), so a config sub-folder, as in
    the parquet branch's `scene_parsing/train/0000.parquet`, is passed as `data_dir` instead.
    """
    local = Path(path).expanduser()
    try:
        if local.is_dir():
            sub = config_name if config_name and (local / config_name).is_dir() else None
            return datasets.load_dataset(str(local), data_dir=sub, streaming=streaming)
        return datasets.load_dataset(path, config_name, revision=revision, streaming=streaming)
    except (OSError, ValueError) as e:  # offline, missing repo or files, unknown config
        raise DataError(f"Could not load '{path}' from the Hub: {e}\n(Offline? Point data.path at a local "
                        "copy: a folder of parquet files laid out like the repo.)") from None


def detect_columns(ds: Split, image_column: str | None, label_column: str | None, where: str) -> Split:
    """Keep only the image and label columns, renamed to `image` and `label`."""
    columns = list(ds.column_names or next(iter(ds)).keys())

    def pick(given: str | None, candidates: tuple[str, ...], field_name: str) -> str:
        if given is not None and given in columns:
            return given
        found = [c for c in candidates if c in columns] if given is None else []
        if not found:
            raise DataError(f"{where}: no {field_name.split('_')[0]} column "
                            f"{'named ' + repr(given) if given else 'found'}; columns are {columns}. "
                            f"Set data.{field_name} to one of them.")
        return found[0]

    image = pick(image_column, IMAGE_COLUMNS, "image_column")
    label = pick(label_column, LABEL_COLUMNS, "label_column")
    ds = ds.select_columns([image, label])
    return ds.rename_columns({k: v for k, v in ((image, "image"), (label, "label")) if k != v})


def pick_splits(available: list[str], wanted: dict[str, str], where: str) -> dict[str, str]:
    """segkit split -> source split: `data.splits` when given, else by the usual names."""
    if wanted:
        unknown = sorted(set(wanted) - set(SPLIT_ALIASES))
        missing = [s for s in wanted.values() if s not in available]
        if unknown or missing:
            raise DataError(f"{where}: data.splits names {unknown or missing}, but segkit splits are "
                            f"train/val/test and the source has {available}.")
        return dict(wanted)
    found = {ours: next((s for s in names if s in available), None) for ours, names in SPLIT_ALIASES.items()}
    return {ours: theirs for ours, theirs in found.items() if theirs is not None}


def hold_out_val(splits: dict[str, Split], fraction: float, seed: int) -> dict[str, Split]:
    """Give a source without a validation split one, seeded, out of train.

    A streamed train split is not shuffled first: a shuffled stream reshuffles each epoch
    (`set_epoch`), and `skip` would then hand val rows back to training. The first rows in file
    order are held out instead.
    """
    train = splits.get("train")
    if "val" in splits or train is None or fraction <= 0:
        return splits
    if isinstance(train, datasets.IterableDataset):
        total = next((s.num_examples for s in (train.info.splits or {}).values() if s.num_examples), 0)
        n_val = max(1, round(total * fraction)) if total else STREAM_VAL_ROWS
        return {**splits, "train": train.skip(n_val), "val": train.take(n_val)}
    if len(train) < 2:
        return splits
    n_val = min(len(train) - 1, max(1, round(len(train) * fraction)))
    parts = train.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return {**splits, "train": parts["train"], "val": parts["test"]}


def _hub_splits(cfg: DataConfig, path: str, where: str, preferred: dict[str, str] | None = None,
                config_name: str | None = None, revision: str | None = None) -> dict[str, Split]:
    loaded = hub_load(path, config_name, revision, cfg.streaming)
    chosen = pick_splits(list(loaded), cfg.splits or preferred or {}, where)
    if "train" not in chosen:
        raise DataError(f"{where}: no training split among {list(loaded)}; set data.splits, e.g. {{train: {list(loaded)[0]}}}.")
    splits = {ours: detect_columns(loaded[theirs], cfg.image_column, cfg.label_column, where)
              for ours, theirs in chosen.items()}
    return hold_out_val(splits, cfg.val_fraction, cfg.seed)


def _ade20k(cfg: DataConfig) -> Source:
    """SceneParse150 from the Hub's parquet branch, a parquet mirror, or a local folder.

    A local folder is the official ADEChallengeData2016 (images/{training,validation}), or a flat
    images/ + annotations/ pair (like shared/data/ade20k-samples), which is one pool split into
    train and a seeded `val_fraction` (at least one image) like any single-split source.
    """
    names = {0: "other"} | {i + 1: n.split(";")[0] for i, n in enumerate(ADE20K_NAMES)}
    aliases = {i + 1: n.split(";")[1:] for i, n in enumerate(ADE20K_NAMES) if ";" in n}
    path = cfg.path or ADE20K_REPO
    local = Path(path).expanduser()
    if (local / "ADEChallengeData2016").is_dir():
        local = local / "ADEChallengeData2016"
    if (local / "images").is_dir():
        from segkit.data.folder import folder_splits  # the official download is a plain folder

        layout = {"train": "training", "val": "validation"} if (local / "images" / "training").is_dir() else {}
        splits = folder_splits(cfg, local, "images/{split}" if layout else "images",
                               "annotations/{split}" if layout else "annotations", layout)
    else:
        try:
            splits = _hub_splits(cfg, path, "ade20k", {"train": "train", "val": "validation"},
                                 cfg.config_name or ADE20K_CONFIG, cfg.revision or ADE20K_REVISION)
        except DataError as e:
            raise DataError(
                f"{e}\nAlternatives: a parquet mirror of scene_parse_150 (`data.path: <repo id>`), or the "
                "official ADEChallengeData2016 download unpacked locally (`data.path: /path/to/"
                "ADEChallengeData2016`, with images/ and annotations/ inside).") from None
    return Source(splits, names, [0], "ade20k", aliases, origin=f"ade20k:{local.resolve() if local.is_dir() else path}")


def _sidewalk(cfg: DataConfig) -> Source:
    path = cfg.path or SIDEWALK_REPO
    splits = _hub_splits(cfg, path, "sidewalk", None, cfg.config_name, cfg.revision)
    names = dict(enumerate(SIDEWALK_NAMES))
    return Source(splits, names, [0], "sidewalk", origin=f"sidewalk:{path}:{cfg.revision}")


def _id2label(path: str, revision: str | None) -> dict[int, str] | None:
    """The repo's id2label.json (the convention of Hub segmentation datasets), if it has one."""
    local = Path(path).expanduser() / "id2label.json"
    if not local.is_file():
        try:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(path, "id2label.json", repo_type="dataset", revision=revision))
        except Exception:  # offline, gated, or simply absent: the recipe's class_names is the fallback
            return None
    try:
        return {int(k): str(v) for k, v in json.loads(local.read_text()).items()}
    except (ValueError, AttributeError) as e:
        raise DataError(f"{local}: expected a JSON object {{\"0\": \"name\", ...}} ({e}). "
                        "Fix it, or set data.class_names.") from None


def _hub(cfg: DataConfig) -> Source:
    if not cfg.path:
        raise DataError("data.path: format 'hub' needs a repo id (or a local folder of parquet files).")
    splits = _hub_splits(cfg, cfg.path, cfg.path, None, cfg.config_name, cfg.revision)
    names = class_names_for(cfg, lambda: _id2label(cfg.path, cfg.revision), cfg.path)
    return Source(splits, names, unlabeled_ids(names), Path(cfg.path).name,
                  origin=f"hub:{cfg.path}:{cfg.config_name}:{cfg.revision}")


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
    names = class_names_for(cfg, lambda: _id2label(str(root), None), str(root))
    return Source(splits, names, unlabeled_ids(names), root.name, origin=f"disk:{root.resolve()}")


def _synthetic(cfg: DataConfig) -> Source:
    from segkit.data.synthetic import synthetic_source

    return synthetic_source(cfg)


def _folder(cfg: DataConfig) -> Source:
    from segkit.data.folder import folder_source

    return folder_source(cfg)


LOADERS = {"synthetic": _synthetic, "ade20k": _ade20k, "sidewalk": _sidewalk, "hub": _hub,
           "folder": _folder, "disk": _disk}


def load_source(cfg: DataConfig) -> Source:
    """Load the rows `cfg` points at, with train/val/test splits in the segkit schema."""
    if cfg.format not in LOADERS:
        raise DataError(f"data.format: '{cfg.format}' is unknown. Choose one of: {', '.join(LOADERS)}")
    source = LOADERS[cfg.format](cfg)
    empty = [s for s, ds in source.splits.items() if isinstance(ds, datasets.Dataset) and len(ds) == 0]
    if empty:
        raise DataError(f"{source.name}: split(s) {empty} have no rows. Check data.path and data.splits.")
    return source


def unlabeled_ids(names: dict[int, str]) -> list[int]:
    """Ids whose name says "not annotated" (unlabeled, void, other, ...)."""
    return [i for i, n in names.items() if n.strip().lower().replace("-", "").replace("_", "") in UNLABELED_NAMES]


def class_names_for(cfg: DataConfig, fallback, where: str) -> dict[int, str]:
    """`data.class_names` when given, else what the source ships (`fallback()`), else an error."""
    if cfg.class_names is not None:
        return read_class_names(cfg.class_names)
    names = fallback()
    if not names:
        raise DataError(f"{where}: no class names found (no id2label.json). Set data.class_names to a "
                        "list of names by id, or a JSON/YAML/TXT file holding them.")
    return names


def read_class_names(value: list[str] | str) -> dict[int, str]:
    """Class names by id from a list, or from a JSON/YAML file (list or {id: name}) or TXT file
    (one name per line, line number = id)."""
    if isinstance(value, list):
        return {i: str(n) for i, n in enumerate(value)}
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataError(f"data.class_names: file {path} not found. Give a list of names or a JSON/YAML/TXT file.")
    text = path.read_text()
    if path.suffix.lower() == ".txt":
        loaded: object = [line.strip() for line in text.rstrip().splitlines()]
    else:
        import yaml  # YAML is a superset of JSON, so one parser reads both

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"data.class_names: {path} is not valid JSON/YAML: {e}") from None
    if isinstance(loaded, list):
        return {i: str(n) for i, n in enumerate(loaded)}
    if isinstance(loaded, dict) and all(str(k).strip().isdigit() for k in loaded):
        return {int(k): str(v) for k, v in loaded.items()}
    raise DataError(f"data.class_names: {path} must hold a list of names or a mapping id -> name.")
