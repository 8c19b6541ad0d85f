"""MaskFormer and Mask2Former with Swin backbones: mask classification instead of per-pixel logits.

Both predict Q (mask, class) pairs and train with their own Hungarian-matched set loss, so they
need labels as per-image binary masks plus class ids; `semantic_to_targets` makes those from
segkit's (B, H, W) maps. Their scores (per-pixel class probabilities) come from `to_scores`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    DetrConfig,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessorPil,
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    MaskFormerImageProcessorPil,
    SwinConfig,
)

from segkit.config.sections import InputSpec, LossConfig, ModelConfig
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegOutput
from segkit.models.hf import (
    HFSegModel,
    enable_checkpointing,
    head_note,
    load_for_labels,
    load_processor,
    read_checkpoint_config,
)
from segkit.models.outputs import to_scores
from segkit.models.registry import FAMILIES

log = logging.getLogger(__name__)


class _DropBackboneWarning(logging.Filter):
    """Saved MaskFormers name their backbone `maskformer-swin`, which the config check does not
    list as supported although the model builds it itself; every reload warns for nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Backbone maskformer-swin is not a supported")


for _name in ("transformers.models.maskformer.configuration_maskformer",
              "transformers.models.mask2former.configuration_mask2former"):
    logging.getLogger(_name).addFilter(_DropBackboneWarning())

# Swin backbones. `tiny` (embed 32, one block per stage) is for tests; the others match the
# facebook/*-swin-tiny-* and *-swin-base-* checkpoints, for benchmarks from random weights.
SWIN: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4, image_size=64),
    "swin-tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                      image_size=224, drop_path_rate=0.3),
    "swin-base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                      image_size=384, drop_path_rate=0.3),
}

# Sizes >= 32 run (Swin pads to its windows); multiples of 32 keep every stage whole.
SIZE_RULES = dict(size_divisor=32, min_size=32)
M2F_MASK_SIZE = (384, 384)
"""Mask2FormerImageProcessor.post_process_semantic_segmentation resizes mask logits to this first."""


def global_num_masks(class_labels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Target masks per process, for the set loss's normaliser: the sum over every process, divided
    once by their number (as DETR does). Each process's mask and dice terms are then sums over its
    own masks divided by that mean, and DDP's gradient average makes them the global batch's sum
    over all masks divided by the global count: the loss of one process on the same global batch.

    Replaces transformers' `get_num_masks`, which takes accelerate's `reduce` (already a mean) and
    divides by the world size again, so on N processes the mask and dice terms weigh N times more
    against the class term.
    """
    count = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
    world = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)  # SUM
        world = torch.distributed.get_world_size()
    return torch.clamp(count / world, min=1)


def semantic_to_targets(labels: torch.Tensor, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(B, H, W) class ids -> per image `mask_labels` [n_present, H, W] float, `class_labels` [n_present].

    Per image, one comparison of the map against its present class ids makes all masks at once
    (a loop over the batch only, so memory is n_present x H x W rather than B x C x H x W).
    255 (ignored) is never a class id, so ignored pixels are 0 in every mask. An image with no
    chosen class gets empty [0, H, W] / [0] targets; the set loss then only pushes every query
    towards "no object" (checked in the tests).
    """
    mask_labels, class_labels = [], []
    for seg in labels:
        ids = torch.unique(seg)
        ids = ids[ids < num_classes]  # drops 255
        mask_labels.append((seg[None] == ids[:, None, None]).float())
        class_labels.append(ids)
    return mask_labels, class_labels


class SemanticTargets:
    """`semantic_to_targets` for one (H, W) map on the CPU, in the training collate (picklable, so
    DataLoader workers run it): `mask_labels` [n_present, H, W] bool, 1 byte a pixel on the wire
    and made float on the device, and `class_labels` [n_present] int64, the present ids in
    increasing order as `torch.unique` gives them. The set loss is then the same to the bit, and
    the step needs no per-image host sync for its targets."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = seg.reshape(-1).to(torch.int64)
        counts = torch.bincount(flat, minlength=256)[: self.num_classes]  # 255 (ignored) is never a class
        ids = torch.nonzero(counts).flatten()
        return seg[None] == ids.to(seg.dtype)[:, None, None], ids


class _QuerySeg(HFSegModel):
    """Shared by MaskFormer and Mask2Former; subclasses name the classes and config fields."""

    has_own_loss = True  # the set loss; each subclass reads its own from the registry
    classifier_name = "model.class_predictor"
    # The Swin backbones normalise each stage's output with their own `hidden_states_norms`; the
    # Swin model's final layernorm (MaskFormer's `model.layernorm`, Mask2Former's `swin.layernorm`)
    # is only for image classification.
    never_used = ("encoder.model.layernorm.weight", "encoder.model.layernorm.bias",
                  "encoder.swin.layernorm.weight", "encoder.swin.layernorm.bias")
    hf_class: Any
    processor_class: Any
    default_checkpoint: str
    loss_fields: dict[str, str]
    """LossConfig knob -> the transformers config field it sets."""
    head_sizes: dict[str, dict[str, Any]]
    """Decoder settings per size (beside the Swin backbone); {} keeps the transformers defaults."""

    def train_targets(self) -> SemanticTargets:
        return SemanticTargets(self.labels.num_classes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                mask_labels: list[torch.Tensor] | None = None,
                class_labels: list[torch.Tensor] | None = None) -> SegOutput:
        """Scores without labels; the set loss with `labels`, or with the targets the training
        collate built (`SemanticTargets`), which then need no work here."""
        pixel_values = self.check_input(pixel_values)
        if labels is None and mask_labels is None:
            return SegOutput(scores=self.semantic_scores(self.model(pixel_values=pixel_values)))
        if mask_labels is None:
            mask_labels, class_labels = semantic_to_targets(labels, self.labels.num_classes)
        mask_labels = [m.float() for m in mask_labels]  # as semantic_to_targets makes them
        out = self.model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        return SegOutput(scores=None, loss=out.loss)  # training reads only the set loss

    def semantic_scores(self, out: Any) -> torch.Tensor:
        """Per-pixel class probabilities, as the family's `post_process_semantic_segmentation`
        computes them before resizing (so `pipeline` reproduces segkit's masks)."""
        return to_scores(out)

    def backbone(self) -> nn.Module:
        return self.model.model.pixel_level_module.encoder

    def enable_gradient_checkpointing(self) -> bool:
        # The transformers decoders have no checkpointing; the Swin backbone, where most
        # activation memory sits at high resolution, does.
        if enable_checkpointing(self.model):
            return True
        if enable_checkpointing(self.backbone()):
            log.info("%s: gradient checkpointing is on in the Swin backbone only (the decoder has none)",
                     self.family)
            return True
        return False

    def _sync_loss_weights(self) -> None:
        """The no-object weight lives in a saved buffer too; make it follow the config."""
        criterion = self.model.criterion
        criterion.get_num_masks = global_num_masks  # an instance attribute: no `self` is passed
        criterion.eos_coef = self.model.config.no_object_weight
        with torch.no_grad():
            criterion.empty_weight[-1] = criterion.eos_coef

    @classmethod
    def _processor(cls, source: str | Path | None) -> Any:
        # 255 is the ignored value everywhere in segkit; reducing labels would turn it into 254
        # and shift every class, so it is always off.
        return load_processor(cls.processor_class, source, do_reduce_labels=False, ignore_index=255)

    @classmethod
    def _loss_overrides(cls, loss: LossConfig) -> dict[str, float]:
        """Only the knobs the recipe sets. Unset ones keep the checkpoint's values, which are the
        papers' (no_object 0.1; MaskFormer CE 1 / mask 20 / dice 1; Mask2Former 2 / 5 / 5). They
        suit small label sets too: with few classes almost all of the 100 queries match nothing,
        and the 0.1 no-object weight is what keeps those from swamping the class loss."""
        return {field: float(getattr(loss, knob)) for knob, field in cls.loss_fields.items()
                if getattr(loss, knob) is not None}

    @classmethod
    def _config(cls, size: str, labels: LabelSet, overrides: dict[str, float]) -> Any:
        raise NotImplementedError

    @classmethod
    def build(cls, cfg: ModelConfig, labels: LabelSet, loss: LossConfig, spec: InputSpec) -> "_QuerySeg":
        hf_cls = cls.hf_class
        overrides = cls._loss_overrides(loss)
        if cfg.size:
            if cfg.size not in cls.head_sizes:
                raise ModelError(f"model.size '{cfg.size}' is not a {cls.family} size. Choose one of: "
                                 f"{', '.join(cls.head_sizes)}.")
            model = hf_cls(cls._config(cfg.size, labels, overrides))
            seg = cls(model, labels, cls._processor(None), spec, **SIZE_RULES)
        else:
            config_dict = read_checkpoint_config(cfg.checkpoint, cls.family, cls.default_checkpoint)
            model, carried = load_for_labels(hf_cls, cfg.checkpoint, config_dict, labels, classifier="class_predictor",
                                             carry=cfg.head_init == "checkpoint", **overrides)
            seg = cls(model, labels, cls._processor(cfg.checkpoint), spec, **SIZE_RULES)
            seg.carried_head = carried
            seg.head_note = head_note(config_dict, hf_cls, cfg.checkpoint)
        seg._sync_loss_weights()
        return seg

    @classmethod
    def load(cls, path: str | Path, **hub: Any) -> "_QuerySeg":
        model = cls.hf_class.from_pretrained(path, **hub)
        processor = cls._processor(path)
        return cls(model, LabelSet.from_config(model.config), processor,
                   cls.saved_input_spec(model.config, processor), **SIZE_RULES)


def _swin(size: str) -> Any:
    return SwinConfig(**SWIN[size], out_features=["stage1", "stage2", "stage3", "stage4"])


class MaskFormerSeg(_QuerySeg):
    family = "maskformer"
    hf_class = MaskFormerForInstanceSegmentation
    processor_class = MaskFormerImageProcessorPil
    default_checkpoint = FAMILIES["maskformer"].default_checkpoint
    has_own_loss = FAMILIES["maskformer"].has_own_loss
    loss_fields = {"no_object_weight": "no_object_weight", "class_coef": "cross_entropy_weight",
                   "mask_coef": "mask_weight", "dice_coef": "dice_weight"}
    head_sizes = {
        "tiny": dict(fpn_feature_size=64, mask_feature_size=64,
                     decoder=dict(d_model=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128,
                                  encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128,
                                  num_queries=20)),
        "swin-tiny": {},
        "swin-base": {},
    }

    @classmethod
    def _config(cls, size: str, labels: LabelSet, overrides: dict[str, float]) -> Any:
        head = dict(cls.head_sizes[size])
        decoder = DetrConfig(**head.pop("decoder")) if "decoder" in head else None
        return MaskFormerConfig(backbone_config=_swin(size), decoder_config=decoder, **head, **overrides,
                                num_labels=labels.num_classes)


class Mask2FormerSeg(_QuerySeg):
    family = "mask2former"
    hf_class = Mask2FormerForUniversalSegmentation
    processor_class = Mask2FormerImageProcessorPil
    default_checkpoint = FAMILIES["mask2former"].default_checkpoint
    has_own_loss = FAMILIES["mask2former"].has_own_loss
    loss_fields = {"no_object_weight": "no_object_weight", "class_coef": "class_weight",
                   "mask_coef": "mask_weight", "dice_coef": "dice_weight"}
    head_sizes = {
        # train_num_points: the mask loss samples points per mask; 12544 is more than a 64 px
        # image's 1/4 map holds, and only costs time.
        "tiny": dict(feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128,
                     encoder_layers=1, decoder_layers=3, num_attention_heads=4, dim_feedforward=128,
                     num_queries=20, train_num_points=1024),
        "swin-tiny": {},
        "swin-base": {},
    }

    @classmethod
    def _config(cls, size: str, labels: LabelSet, overrides: dict[str, float]) -> Any:
        return Mask2FormerConfig(backbone_config=_swin(size), **cls.head_sizes[size], **overrides,
                                 num_labels=labels.num_classes)

    def semantic_scores(self, out: Any) -> torch.Tensor:
        """As MaskFormer, except that transformers' Mask2Former post-processing first resizes the
        mask logits to 384x384. segkit does the same, so that its masks are `pipeline`'s."""
        masks = F.interpolate(out.masks_queries_logits, size=M2F_MASK_SIZE, mode="bilinear", align_corners=False)
        return to_scores(SimpleNamespace(class_queries_logits=out.class_queries_logits, masks_queries_logits=masks))
