"""The recipe's sections: one typed dataclass each (data, classes, augment, model, loss, train),
every field with its own docstring. `segkit.config.recipe` reads them from YAML and
`segkit.config.checks` validates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CLASS_WEIGHT_KINDS = ("inverse", "sqrt_inverse", "enet")
"""Computed class weights (`loss.class_weights`); `segkit.train.class_weights` defines each."""


def hw(size: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """A size as recipes write it, `512` or `[384, 512]`, as (height, width)."""
    if isinstance(size, int):
        return size, size
    return (int(size[0]), int(size[0])) if len(size) == 1 else (int(size[0]), int(size[1]))


@dataclass
class DataConfig:
    format: Literal["synthetic", "ade20k", "sidewalk", "hub", "folder", "disk", "coco", "coco_panoptic", "cvat",
                    "cvat_mask", "label_studio", "labelme", "voc", "colour_masks"] = "synthetic"
    """Where rows come from. `ade20k` and `sidewalk` are Hub presets; `hub` is any repo id;
    `folder` is images + masks on disk; `disk` is a dataset saved with `save_to_disk`. Annotation
    exports, read as the tool wrote them (`data.path`): `coco`, `coco_panoptic`, `cvat` (CVAT for
    images 1.1 XML), `cvat_mask` (CVAT Segmentation mask 1.1), `label_studio` (JSON export),
    `labelme` (a folder of JSON files), `voc` (Pascal VOC SegmentationClass) and `colour_masks`
    (RGB masks with a colour table in `data.palette`)."""
    path: str | None = None
    """Hub repo id or local folder. Presets fill it in; `ade20k` also accepts a local
    ADEChallengeData2016 folder here."""
    revision: str | None = None
    """Hub revision (branch, tag or commit). The `ade20k` preset uses `refs/convert/parquet`."""
    config_name: str | None = None
    """Hub dataset config name, for repos whose card declares configs."""
    data_dir: str | None = None
    """Sub-folder of the repo holding the data files: a config's folder on a parquet branch
    (`scene_parsing` for the `ade20k` preset, which sets it)."""
    image_column: str | None = None
    """Column holding the image. None detects it (`image`, `pixel_values`, ...)."""
    label_column: str | None = None
    """Column holding the label map. None detects it (`annotation`, `label`, `mask`, ...)."""
    splits: dict[str, str] = field(default_factory=dict)
    """segkit split name (train/val/test) -> source split name or folder. Empty detects them."""
    val_fraction: float = 0.1
    """Share of train held out (seeded) as `val` when the source has no validation split."""
    images: str = "images/{split}"
    """`folder` format: image folder (or list file) under `path`; `{split}` is replaced."""
    masks: str = "annotations/{split}"
    """`folder` format: mask folder (or list file) under `path`; `{split}` is replaced."""
    class_names: list[str] | str | None = None
    """Source class names by id: a list, or a JSON/YAML/TXT file. None reads them from the
    source (preset tables, the repo's id2label.json, or the dataset features)."""
    palette: list[list[int]] | str | None = None
    """`folder` format with RGB masks: one [r, g, b] per source class id, or a file holding them.
    `colour_masks`/`voc`/`cvat_mask`: the colour table, a `labelmap.txt` (`name:r,g,b::`), a
    JSON/YAML name -> [r, g, b] map, or a preset: `cityscapes`, `camvid`. None finds labelmap.txt."""
    keep_crowd: bool = False
    """`coco`/`coco_panoptic`: draw `iscrowd: 1` regions as their class. False makes them 255
    (ignored): a crowd region's pixels are not all of that class."""
    polyline_width: int = 0
    """`cvat`: draw `<polyline>` shapes this many pixels wide. 0 leaves them out (a line has no area)."""
    from_name: str | None = None
    """`label_studio`: the labelling tag (`from_name`) whose results to read. None reads every
    polygonlabels/brushlabels result."""
    streaming: bool = False
    """Stream rows from the Hub instead of downloading: for datasets larger than the disk."""
    synthetic_samples: int = 64
    """`synthetic` format: number of generated training images (val and test get a quarter)."""
    synthetic_size: int = 128
    """`synthetic` format: side length of generated images in pixels."""
    seed: int = 0
    """Seed for the train/val split and for sample caps."""
    max_skipped: float = 0.01
    """Training samples that fail to decode or to map mid-run (a streamed or unaudited source) are
    skipped and listed in RUN/skipped.csv. The run stops once skips pass this: a count (>= 1), or a
    share (< 1) of the samples read, counted against at least 1000. 0 stops at the first one."""
    license: str | None = None
    """Licence of the data, e.g. `cc-by-nc-4.0`. Pictures of non-commercial or gated data stay out
    of a public `segkit push` unless asked for."""


@dataclass
class ClassesConfig:
    select: list[Any] | dict[str, Any] | None = None
    """Classes to train on, by source name (case-insensitive) or id. A mapping merges several
    source classes into one: `{vehicle: [car, truck, bus], person: person}`. None keeps all."""
    others: Literal["background", "ignore"] = "background"
    """Where pixels of unselected classes go: a `background` class, or 255 (ignored)."""
    background_name: str = "background"
    """Name of the background class when `others: background`."""
    ignore: list[Any] | None = None
    """Source classes that become 255 (ignored). None ignores the source's unlabeled/other class."""
    drop_empty: bool = False
    """Drop training samples that contain none of the selected classes."""
    max_samples: int | None = None
    """Cap on training samples (seeded choice). None keeps all."""
    max_eval_samples: int | None = None
    """Cap on val/test samples (seeded choice). None keeps all."""


@dataclass
class AugmentConfig:
    crop_size: int | list[int] = 512
    """Training crop, one side or [height, width]."""
    scale: list[float] = field(default_factory=lambda: [0.5, 2.0])
    """Random rescale range applied before the crop."""
    hflip: bool = True
    """Random horizontal flip."""
    rotate: float = 0.0
    """Maximum random rotation in degrees; 0 turns it off."""
    color_jitter: float = 0.0
    """Strength of brightness/contrast/saturation jitter; 0 turns it off."""
    cat_max_ratio: float | Literal["auto"] = "auto"
    """Retry the crop until no single class covers more than this share of it (1.0 = off). `auto`:
    0.75 when others become background (crops of background alone teach little), else off."""
    eval_mode: Literal["resize", "pad", "none"] = "resize"
    """Evaluation input: resize to `eval_size`, pad to a multiple of 32, or unchanged. Labels are
    never resized; predictions are upsampled to them."""
    eval_size: int | list[int] | None = None
    """Evaluation size for `eval_mode: resize`; None uses `crop_size`."""


@dataclass(frozen=True)
class InputSpec:
    """How images are fed to a model outside training: `augment.eval_mode` resolved. Models save it
    in their config (`segkit_input`) and in their image processor; see `segkit.infer.scores`."""

    mode: Literal["resize", "pad", "none"] = "none"
    size: tuple[int, int] | None = None
    """(height, width) for `resize`."""
    window: tuple[int, int] | None = None
    """(height, width) of the training crops: the sliding window for images far larger."""

    def __post_init__(self) -> None:
        if self.mode not in ("resize", "pad", "none"):
            raise ValueError(f"input mode '{self.mode}' is unknown: use resize, pad or none")
        if self.mode == "resize" and not self.size:
            raise ValueError("input mode resize needs a size (height, width)")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "size": list(self.size) if self.size else None,
                "window": list(self.window) if self.window else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        size, window = d.get("size"), d.get("window")
        return cls(d.get("mode", "none"), tuple(int(s) for s in size) if size else None,
                   tuple(int(s) for s in window) if window else None)

    @classmethod
    def from_augment(cls, cfg: AugmentConfig) -> "InputSpec":
        """`augment.eval_mode` and `eval_size` (which defaults to the training crop)."""
        size = hw(cfg.eval_size if cfg.eval_size is not None else cfg.crop_size)
        return cls(cfg.eval_mode, size if cfg.eval_mode == "resize" else None, hw(cfg.crop_size))


@dataclass
class ModelConfig:
    family: str = "segformer"
    """One of the families in `segkit.models.registry`: segformer, maskformer, mask2former, vit."""
    checkpoint: str | None = None
    """Hub id or local folder of pretrained weights. Exclusive with `size`."""
    size: str | None = None
    """Build from a config with random weights instead: `tiny` for tests, or a named size
    (segformer b0..b5; maskformer/mask2former swin-tiny/swin-base; vit small/base)."""
    head_init: Literal["checkpoint", "random"] = "checkpoint"
    """A checkpoint trained for other classes: build each new class's classifier row from the
    checkpoint rows of the source classes it is made of (when any chosen class is among them), or
    start the classifier at random."""
    head: Literal["linear", "multilevel"] = "multilevel"
    """`vit` family: a linear head on patch tokens, or a head fed by several encoder layers."""
    freeze_backbone: bool = False
    """Train only the decoder/head; the pretrained encoder stays fixed."""
    gradient_checkpointing: bool = False
    """Trade compute for memory where the model supports it."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    channels_last: bool = False
    """Use channels-last memory format (helps convolutional decoders on GPU)."""
    license: str | None = None
    """Licence of the trained model for its card; None takes the base checkpoint's."""


@dataclass
class LossConfig:
    name: Literal["ce", "ohem", "focal"] = "ce"
    """Pixel loss for families without their own: cross-entropy, online hard-example mining, or
    focal loss. MaskFormer/Mask2Former use their own set loss and ignore this."""
    class_weights: str | list[float] | None = "auto"
    """`inverse`, `sqrt_inverse` or `enet` (from training pixel counts), a list, or None. `auto`:
    sqrt_inverse when others become background (it then holds most pixels), else None."""
    dice: float = 0.0
    """Weight of a Dice term added to the pixel loss; 0 turns it off."""
    lovasz: float = 0.0
    """Weight of a Lovasz-softmax term added to the pixel loss; 0 turns it off."""
    focal_gamma: float = 2.0
    """Focusing exponent of the focal loss."""
    ohem_keep: float = 0.25
    """OHEM: share of the hardest labelled pixels kept per batch."""
    no_object_weight: float | None = None
    """MaskFormer/Mask2Former: weight of the "no object" class. None keeps the model's default."""
    class_coef: float | None = None
    """MaskFormer/Mask2Former: weight of the classification loss. None keeps the default."""
    mask_coef: float | None = None
    """MaskFormer/Mask2Former: weight of the mask (BCE/focal) loss. None keeps the default."""
    dice_coef: float | None = None
    """MaskFormer/Mask2Former: weight of the mask Dice loss. None keeps the default."""


@dataclass
class TrainConfig:
    epochs: float = 10
    """Training budget in epochs; `max_steps` overrides it when set."""
    max_steps: int | None = None
    """Training budget in optimizer steps."""
    batch_size: int = 8
    """Images per device per forward pass."""
    eval_batch_size: int | None = None
    """Images per device during evaluation; None uses `batch_size`."""
    grad_accum: int = 1
    """Forward passes per optimizer step."""
    lr: float = 6e-5
    """Peak learning rate of the head/decoder."""
    backbone_lr_scale: float = 0.1
    """Backbone learning rate = lr * this. Use 1.0 when training from scratch."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to norms and biases)."""
    warmup_steps: int = 0
    """Linear warmup from 0 to `lr`, over this many steps (with a `time_budget`, it ramps up the
    planned schedule over its first steps)."""
    schedule: Literal["poly", "cosine", "linear", "constant"] = "poly"
    """Decay after warmup."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 turns clipping off."""
    mixed_precision: Literal["auto", "no", "fp32", "bf16", "fp16"] = "auto"
    """`auto`: bf16 on GPUs that have it, else fp16; on a CPU with native bf16, whichever of fp32 and
    bf16 runs this model's step measurably faster (timed at start-up, cached; segkit.precision);
    fp32 on other CPUs. `no` and `fp32` are the same. fp16 needs a GPU."""
    eval_every: int = 0
    """Evaluate every N optimizer steps; 0 evaluates at the end of each epoch."""
    eval_at_start: bool | None = None
    """Score val before the first step (start.json). None does it when the classifier was built
    from a checkpoint's rows, to show where training starts."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N optimizer steps; 0 saves one at each evaluation."""
    keep_last: int = 2
    """Number of recent checkpoints kept besides the best."""
    early_stopping: int = 0
    """Stop after this many evaluations without a better mIoU; 0 turns it off."""
    seed: int = 0
    """Seed for weights, data order and augmentation."""
    num_workers: int | Literal["auto"] = "auto"
    """DataLoader worker processes per training process. `auto`: the cores this process may run
    on (its CPU affinity, shared by the processes `accelerate launch` started on this machine),
    less one for the process itself, at least 1. They persist across epochs and evaluations; each
    holds a copy of the dataset object and its prefetched batches, so lower it when memory is short."""
    prefetch_factor: int = 2
    """Batches each worker keeps ready ahead of the step (DataLoader `prefetch_factor`)."""
    log_every: int = 10
    """Log loss and lr every N optimizer steps."""
    tracker: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    """Experiment tracker through accelerate."""
    sampler: Literal["uniform", "rare", "auto"] = "auto"
    """`rare` draws images with rare classes more often (weights from class statistics). `auto`:
    rare when others become background, else uniform."""
    sampler_power: float = 0.5
    """`rare` sampler: image weight grows with (1 / class frequency) ** power."""
    num_overlays: int = 8
    """Overlay panels written after the final evaluation."""
    max_bad_steps: int = 5
    """A step whose loss or gradient norm is NaN or inf is skipped (the weights stay finite); this
    many in a row stop the run, naming the last good checkpoint."""
    time_budget: str | float | None = None
    """Wall-clock budget for the whole run, evaluations and the final report included: `90s`,
    `10m`, `1.5h` or seconds. The step rate is measured over the first steps and the step count,
    the warmup, the decay and the evaluation cadence are planned to fit, then re-planned at each
    evaluation. It replaces `epochs`; `max_steps`, when set too, caps the plan. None: off."""
    budget_evals: int = 4
    """With a `time_budget` and `eval_every: 0`: how many evaluations are spread over the plan (fewer
    when they would take more than a tenth of the budget: segkit.train.time_budget.EVAL_SHARE)."""
    warmup_ratio: float = 0.0
    """Linear warmup over this share of the planned steps, for a `time_budget` (whose step count is
    not known in advance); exclusive with `warmup_steps`."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights with this decay (e.g. 0.999); evaluation,
    the best model and the export then use the averaged weights. None: off."""
    select_by: Literal["strict", "foreground"] = "strict"
    """Which val mIoU picks the best model: `strict` (every class, background included) or
    `foreground` (background left out: the figure usually published for a class subset)."""
    calibrate: bool | Literal["auto"] = False
    """After training, fit one additive logit offset per class on val (to maximise val mIoU) and fold
    it into the classifier's bias, so every export carries it. `auto` keeps the offsets only when
    they raise val mIoU by at least 0.5 points on held-out val images; `true` keeps them whatever;
    `false` (the default) skips it. Off by default because val-fitted offsets only carry to images
    drawn like val: on the races' CamVid test (other sequences than val) every kept fit lowered the
    chosen classes' mean (BENCHMARKS.md). Pixel-classifier families only (segformer, vit)."""
