"""The `vit` family: a ViT or DINOv2 encoder with a segmentation head.

- `head: multilevel` (the default) is UperNet on four encoder layers spread through the depth
  (3, 6, 9, 12 of 12): transformers' `UperNetForSemanticSegmentation` with a `Dinov2Backbone`.
  The deeper layers know *what*, the earlier ones still know *where*. Saved folders load with
  `AutoModelForSemanticSegmentation` and `pipeline("image-segmentation")`.
- `head: linear` is the DINOv2 linear protocol (BatchNorm + 1x1 conv on the last layer's patch
  tokens): segkit's own module (`vit_linear.py`), which loads with segkit only.

DINOv2 checkpoints load into the backbone as they are. transformers has no ViT backbone class, so
a `google/vit-*` checkpoint is mapped onto a `Dinov2Backbone` (same blocks; layer scale fixed at
1): its features are bit-identical to `ViTModel`'s.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    Dinov2Config,
    SegformerImageProcessorPil,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    ViTModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from segkit.config.sections import InputSpec, LossConfig, ModelConfig
from segkit.data.eval_transform import eval_processor
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegModel, SegOutput
from segkit.models.head_init import CarriedHead
from segkit.models.hf import HFSegModel, head_note, keep_or_reset_head, read_checkpoint_config
from segkit.models.locate import resolve_model_dir
from segkit.models.registry import FAMILIES
from segkit.models.vit_linear import ViTLinearSeg, encoder_from_config

log = logging.getLogger("segkit.models")

family = "vit"
"""This module is the vit family's builder (segkit.models.build): `build` and `load` below."""
DEFAULT_CHECKPOINT = FAMILIES[family].default_checkpoint
ENCODERS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=8, image_size=64),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                  image_size=518),  # facebook/dinov2-small
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14,
                 image_size=518),  # facebook/dinov2-base
}
"""DINOv2 encoder sizes for random weights (`model.size`)."""
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_NAMES = {"dinov2": "DINOv2", "dinov2_with_registers": "DINOv2", "vit": "ViT"}


def default_layers(num_layers: int) -> list[int]:
    """Four layers evenly spread, last included (12 layers -> 3, 6, 9, 12); fewer if shallow."""
    return sorted({max(1, round(num_layers * k / 4)) for k in range(1, 5)})


def head_width(hidden_size: int) -> int:
    """UperNet channels: 256 for small encoders, 512 (UperNet's usual) from ViT-B up; tiny test
    encoders get a tiny head."""
    return 64 if hidden_size < 128 else 256 if hidden_size < 768 else 512


def processor(mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """SegFormer's Pil processor (resize, rescale, normalise, and a semantic post-processor): what
    `pipeline` needs for UperNet and what segkit needs to feed any encoder."""
    return eval_processor(None, mean, std)


def encoder_stats(checkpoint: str | None, model_type: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std of the encoder checkpoint's processor: ViT checkpoints use 0.5, DINOv2 ImageNet's."""
    if checkpoint is not None:
        try:
            p = AutoImageProcessor.from_pretrained(checkpoint)
            return tuple(p.image_mean), tuple(p.image_std)
        except OSError:
            log.info("%s has no preprocessor_config.json; using the %s defaults", checkpoint, model_type)
    return ((0.5,) * 3, (0.5,) * 3) if model_type == "vit" else (IMAGENET_MEAN, IMAGENET_STD)


class UperNetViTSeg(HFSegModel):
    """UperNet on a DINOv2 (or converted ViT) backbone, as transformers ships it."""

    family = "vit"
    has_own_loss = FAMILIES["vit"].has_own_loss
    default_checkpoint = DEFAULT_CHECKPOINT
    classifier_name = "model.decode_head.classifier"
    never_used = ("embeddings.mask_token",)  # DINOv2 masks patches only for its own pretraining

    def __init__(self, model: nn.Module, labels: LabelSet, processor: Any, input_spec: InputSpec | None = None) -> None:
        p = model.config.backbone_config.patch_size
        # Tokens are whole patches: a side off the patch grid would silently lose its border
        # pixels, so training refuses it and inference pads (segkit.infer.scores).
        super().__init__(model, labels, processor, input_spec, size_divisor=p, min_size=p, strict_size=True)

    @property
    def encoder(self) -> nn.Module:
        return self.model.backbone

    @property
    def arch_name(self) -> str:
        return _NAMES.get(getattr(self.model.config.backbone_config, "model_type", ""), "ViT")

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        # The logits come back at the input size, as transformers' UperNet returns them: the same
        # numbers `pipeline` post-processes.
        return SegOutput(scores=self.model(pixel_values=self.check_input(pixel_values)).logits)

    def backbone(self) -> nn.Module:
        return self.model.backbone

    @classmethod
    def from_encoder(cls, encoder_config: Any, labels: LabelSet, spec: InputSpec, mean: tuple, std: tuple) -> "UperNetViTSeg":
        enc = encoder_config
        enc.out_features = [f"stage{i}" for i in default_layers(enc.num_hidden_layers)]
        enc.reshape_hidden_states, enc.apply_layernorm = True, True
        # Pool scales without UperNet's usual 1: its 1x1 map of BatchNorm features cannot train on one
        # image per device (BatchNorm needs two values per channel), and 2x2 pooling is nearly global.
        config = UperNetConfig(backbone_config=enc, hidden_size=head_width(enc.hidden_size), pool_scales=[2, 3, 6],
                               use_auxiliary_head=False, loss_ignore_index=255, num_labels=labels.num_classes)
        return cls(UperNetForSemanticSegmentation(config), labels, processor(mean, std), spec)

    @classmethod
    def load(cls, path: str | Path) -> "UperNetViTSeg":
        model = UperNetForSemanticSegmentation.from_pretrained(path)
        proc = SegformerImageProcessorPil.from_pretrained(str(path))
        return cls(model, LabelSet.from_config(model.config), proc, cls.saved_input_spec(model.config, proc))


def _vit_as_dinov2(checkpoint: str) -> tuple[Dinov2Config, dict[str, torch.Tensor]]:
    """A `google/vit-*` encoder as a DINOv2 config and state dict: the blocks are the same, with
    layer scale fixed at 1 and ViT's norm epsilon."""
    vit = ViTModel.from_pretrained(checkpoint, add_pooling_layer=False)
    c = vit.config
    if c.intermediate_size % c.hidden_size:
        raise ModelError(f"model.checkpoint '{checkpoint}': its MLP width {c.intermediate_size} is not a multiple of "
                         f"its hidden size {c.hidden_size}, which a DINOv2 backbone needs; use head: linear.")
    config = Dinov2Config(hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                          num_attention_heads=c.num_attention_heads, mlp_ratio=c.intermediate_size // c.hidden_size,
                          patch_size=c.patch_size, image_size=c.image_size, layerscale_value=1.0,
                          layer_norm_eps=c.layer_norm_eps, hidden_act=c.hidden_act, qkv_bias=c.qkv_bias)
    renames = (("layers.", "encoder.layer."), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"))
    state = {}
    for key, value in vit.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        state[key] = value
    return config, state


def _backbone_state(checkpoint: str, config: Any) -> dict[str, torch.Tensor]:
    """The encoder checkpoint's weights, named as the UperNet backbone names them. Through the
    backbone class's `from_pretrained`, which renames the legacy keys that saved files hold
    (AutoBackbone takes a folder for a repo id)."""
    backbone_cls = getattr(transformers, MODEL_FOR_BACKBONE_MAPPING_NAMES[config.model_type])
    return backbone_cls.from_pretrained(checkpoint, out_features=config.out_features).state_dict()


def build(cfg: ModelConfig, labels: LabelSet, loss: LossConfig, spec: InputSpec) -> SegModel:
    """The `vit` family's builder (segkit.models.registry): whichever head the recipe names."""
    if cfg.head not in ("linear", "multilevel"):
        raise ModelError(f"model.head '{cfg.head}' is unknown for family vit. Choose one of: linear, multilevel.")
    if cfg.size:
        if cfg.size not in ENCODERS:
            raise ModelError(f"model.size '{cfg.size}' is not a vit size. Choose one of: {', '.join(ENCODERS)}.")
        encoder = Dinov2Config(**ENCODERS[cfg.size])
        if cfg.head == "linear":
            return ViTLinearSeg(encoder_from_config(encoder), labels, processor(IMAGENET_MEAN, IMAGENET_STD), spec)
        return UperNetViTSeg.from_encoder(encoder, labels, spec, IMAGENET_MEAN, IMAGENET_STD)
    config_dict = read_checkpoint_config(cfg.checkpoint, "vit", DEFAULT_CHECKPOINT)
    kind = config_dict.get("model_type", "")
    if kind in ("upernet", "segkit-vit"):  # a segkit vit model: fine-tune it again
        return _retarget(load(resolve_model_dir(cfg.checkpoint)), cfg, labels, spec)
    mean, std = encoder_stats(cfg.checkpoint, kind)
    # an encoder checkpoint (ViT's ImageNet classifier, DINOv2 without a head): only the backbone carries
    note = head_note(config_dict, UperNetForSemanticSegmentation, cfg.checkpoint) or \
        f"backbone only, head new: {cfg.checkpoint} is an encoder"
    if cfg.head == "linear":
        linear = ViTLinearSeg.from_encoder_checkpoint(cfg.checkpoint, kind, labels, processor(mean, std), spec)
        linear.head_note = note
        return linear
    if kind == "vit":
        encoder, state = _vit_as_dinov2(cfg.checkpoint)
    elif kind in MODEL_FOR_BACKBONE_MAPPING_NAMES:
        encoder, state = AutoConfig.from_pretrained(cfg.checkpoint), None
    else:
        raise ModelError(f"model.checkpoint '{cfg.checkpoint}' is a '{kind}' model; the vit family takes "
                         "DINOv2 or ViT encoders (e.g. facebook/dinov2-small, google/vit-base-patch16-224).")
    model = UperNetViTSeg.from_encoder(encoder, labels, spec, mean, std)
    if state is None:
        state = _backbone_state(cfg.checkpoint, model.model.config.backbone_config)
    missing, _ = model.backbone().load_state_dict(state, strict=False)
    fresh = [k for k in missing if "layer_scale" not in k and k != "embeddings.mask_token"]
    if fresh:
        raise ModelError(f"model.checkpoint '{cfg.checkpoint}': encoder weights missing: {fresh[:5]}")
    if kind == "vit":
        with torch.no_grad():  # ViT has no layer scale: 1 keeps its blocks unchanged
            for name, p in model.backbone().named_parameters():
                if "layer_scale" in name:
                    p.fill_(1.0)
    log.info("%s: new UperNet head (%d channels) for %d classes on layers %s", cfg.checkpoint,
             model.model.config.hidden_size, labels.num_classes, model.model.config.backbone_config.out_features)
    model.head_note = note
    return model


def load(path: str | Path) -> SegModel:
    """The `vit` family's loader: a saved UperNet or linear-head model."""
    kind = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    return ViTLinearSeg.load(path) if kind == "segkit-vit" else UperNetViTSeg.load(path)


def _retarget(saved: SegModel, cfg: ModelConfig, labels: LabelSet, spec: InputSpec) -> SegModel:
    """A saved vit model for (perhaps) other classes: keep the head for the same classes, else a
    fresh classifier (its old rows kept aside for head_init); the recipe's head type must match."""
    kind = "linear" if isinstance(saved, ViTLinearSeg) else "multilevel"
    if kind != cfg.head:
        raise ModelError(f"model.checkpoint '{cfg.checkpoint}' has a {kind} head; set model.head: {kind}.")
    carried = None
    if cfg.head_init == "checkpoint" and saved.labels.names != labels.names:
        carried = CarriedHead.of(saved.get_submodule(saved.classifier_name), saved.labels)
    if isinstance(saved, ViTLinearSeg):
        model: SegModel = saved.for_labels(labels, spec)
    else:
        keep_or_reset_head(saved.model, "decode_head.classifier", saved.labels, labels, str(cfg.checkpoint))
        model = UperNetViTSeg(saved.model, labels, saved.image_processor(), spec)
    model.carried_head = carried
    return model
