"""What every model family looks like to the rest of segkit: `SegModel` in, `SegOutput` out.

The trainer, metrics, overlays and export only see this interface. Families differ inside
(`segformer.py`, `maskformer.py`, `vit.py`); the helpers at the bottom are the checkpoint
plumbing that the Hugging Face families share: read a checkpoint's config, check that it
belongs to the family, load it for the chosen classes and say which weights are new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit.labels import LabelSet
from segkit.models.outputs import upsample_scores

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model that cannot be built or run as asked. The message says how to fix it."""


@dataclass
class SegOutput:
    scores: torch.Tensor
    """(B, C, h, w) class scores at the model's native resolution: logits (segformer, vit) or
    per-pixel class probabilities (maskformer, mask2former)."""
    loss: torch.Tensor | None = None
    """The family's own loss (maskformer/mask2former when labels are given); None otherwise."""


class SegModel(nn.Module):
    """A segmentation model for one `LabelSet`, whatever the family underneath."""

    family: str = ""
    default_checkpoint: str = ""
    """The Hub id recipes use by default; also the example in error messages."""
    has_own_loss: bool = False
    """True when `forward(x, labels)` returns the loss to train on (the set-prediction losses of
    MaskFormer/Mask2Former). Otherwise the trainer applies segkit's pixel loss to `scores`."""

    def __init__(self, labels: LabelSet, processor: Any, size_divisor: int, min_size: int,
                 strict_size: bool = False) -> None:
        super().__init__()
        self.labels = labels
        self._processor = processor
        self.image_mean: tuple[float, float, float] = tuple(float(v) for v in processor.image_mean)
        self.image_std: tuple[float, float, float] = tuple(float(v) for v in processor.image_std)
        self.size_divisor = size_divisor
        """Input H and W should be multiples of this; eval padding uses it."""
        self.min_size = min_size
        """Smallest input side the backbone takes (SegFormer's first reduction conv needs 32)."""
        self.strict_size = strict_size
        """True when inputs that are not multiples of `size_divisor` are refused (ViT patches)."""
        self.channels_last = False

    # -- what each family provides -------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        raise NotImplementedError

    def backbone(self) -> nn.Module:
        """The pretrained encoder: frozen by `freeze_backbone`, trained at the backbone LR."""
        raise NotImplementedError

    def save_pretrained(self, out_dir: str | Path) -> None:
        raise NotImplementedError

    def enable_gradient_checkpointing(self) -> bool:
        """Turn on activation checkpointing; return False where the model has none."""
        return enable_checkpointing(self.backbone())

    # -- shared behaviour ----------------------------------------------------------------------
    def image_processor(self) -> Any:
        """The Pil image processor saved next to the weights (mean/std, sizes)."""
        return self._processor

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained backbone params, new head/decoder params), trainable ones only.

        Two groups because fine-tuning wants a smaller LR on the pretrained encoder than on the
        freshly initialised head (`train.backbone_lr_scale`).
        """
        in_backbone = {id(p) for p in self.backbone().parameters()}
        backbone, head = [], []
        for p in self.parameters():
            if p.requires_grad:
                (backbone if id(p) in in_backbone else head).append(p)
        return backbone, head

    def freeze_backbone(self) -> None:
        for p in self.backbone().parameters():
            p.requires_grad_(False)

    def check_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Refuse input sizes the backbone cannot take, with the sizes that work."""
        if pixel_values.ndim != 4:
            raise ModelError(f"pixel_values must be (B, 3, H, W); got shape {tuple(pixel_values.shape)}")
        h, w = pixel_values.shape[-2:]
        if min(h, w) < self.min_size:
            raise ModelError(f"{self.family} needs inputs of at least {self.min_size}x{self.min_size} "
                             f"pixels; got {h}x{w}. Increase augment.crop_size / augment.eval_size.")
        d = self.size_divisor
        if self.strict_size and (h % d or w % d):
            near = " or ".join(dict.fromkeys(f"{h2}x{w2}" for h2, w2 in (
                (max(d, h // d * d), max(d, w // d * d)), (-(-h // d) * d, -(-w // d) * d))))
            raise ModelError(f"{self.size_message()} Got {h}x{w}; crop or pad to {near}.")
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    @property
    def arch_name(self) -> str:
        """Name used in messages (the family, or the encoder where that is clearer)."""
        return self.family

    def size_message(self) -> str:
        d = self.size_divisor
        first = max(1, 224 // d)
        examples = ", ".join(str(d * k) for k in range(first, first + 3))
        return (f"{self.arch_name} uses {d}-px patches, so input height and width must be multiples "
                f"of {d}: use {examples}, ... or set augment.crop_size (and eval_size) to a multiple of {d}.")

    @torch.inference_mode()
    def predict(self, pixel_values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, H, W) int64 class ids: argmax of the scores upsampled to `size`."""
        was_training = self.training
        self.eval()
        try:
            scores = self(pixel_values).scores
        finally:
            self.train(was_training)
        return upsample_scores(scores, size).argmax(1)


class HFSegModel(SegModel):
    """A family that is one transformers `PreTrainedModel` (`self.model`) plus its processor."""

    def __init__(self, model: nn.Module, labels: LabelSet, processor: Any, **size: Any) -> None:
        super().__init__(labels, processor, **size)
        self.model = model
        # The config is what save_pretrained writes: keep it in step with the label set even when
        # the weights came from a checkpoint trained on other classes.
        cfg = model.config
        cfg.id2label, cfg.label2id = labels.id2label, labels.label2id
        cfg.segkit_labels = labels.to_dict()
        cfg.segkit_family = self.family

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Hugging Face layout: config.json (+ segkit_labels), model.safetensors, processor."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self._processor.save_pretrained(out)


def enable_checkpointing(module: nn.Module) -> bool:
    """transformers 5 renamed gradient_ to activation_checkpointing_enable; accept either."""
    enable = getattr(module, "activation_checkpointing_enable", None) or getattr(
        module, "gradient_checkpointing_enable", None)
    if enable is None:
        return False
    try:
        enable()
    except ValueError:  # "... does not support activation checkpointing."
        return False
    return True


# -- checkpoint plumbing shared by the Hugging Face families -------------------------------------
MODEL_TYPE_FAMILY = {
    "segformer": "segformer",
    "maskformer": "maskformer",
    "mask2former": "mask2former",
    "vit": "vit",
    "dinov2": "vit",
    "dinov2_with_registers": "vit",
    "segkit-vit": "vit",
}
"""config.model_type -> the segkit family that can load it."""


def family_of(config_dict: dict[str, Any]) -> str | None:
    return config_dict.get("segkit_family") or MODEL_TYPE_FAMILY.get(config_dict.get("model_type", ""))


def read_checkpoint_config(checkpoint: str, family: str, example: str) -> dict[str, Any]:
    """The config.json of a Hub id or local folder, checked to belong to `family`."""
    from transformers import PretrainedConfig

    path = Path(checkpoint).expanduser()
    looks_local = checkpoint.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise ModelError(f"model.checkpoint '{checkpoint}' looks like a folder but does not exist. "
                         f"Fix the path, or give a Hub id such as {example}.")
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(checkpoint)
    except OSError as e:
        raise ModelError(
            f"Could not load model.checkpoint '{checkpoint}'. The Hub said: {e}\n"
            f"Fix: check the id (e.g. {example}) or folder; offline, download it first "
            f"(`hf download {checkpoint}`) or pass a local folder; or set model.size to train "
            "from random weights.") from e
    if not config_dict:
        raise ModelError(f"model.checkpoint '{checkpoint}' has no config.json. Point it at a folder "
                         "written by save_pretrained / `segkit export`, or at a Hub id.")
    owner = family_of(config_dict)
    if owner != family:
        kind = config_dict.get("model_type", "unknown")
        where = f"family '{owner}'" if owner else "no segkit family"
        fix = f"Set model.family: {owner}" if owner else "Use a checkpoint of a supported family"
        raise ModelError(f"model.checkpoint '{checkpoint}' is a '{kind}' model, which belongs to "
                         f"{where}, not '{family}'. {fix}, or pick a {family} checkpoint such as "
                         f"{example}.")
    return config_dict


def checkpoint_class_names(config_dict: dict[str, Any]) -> list[str]:
    stored = config_dict.get("segkit_labels")
    if stored:
        return list(stored["names"])
    id2label = {int(k): v for k, v in (config_dict.get("id2label") or {}).items()}
    return [id2label[i] for i in sorted(id2label)]


def load_for_labels(hf_cls: Any, checkpoint: str, config_dict: dict[str, Any], labels: LabelSet,
                    classifier: str, **overrides: Any) -> nn.Module:
    """from_pretrained with a classifier for `labels`; log which weights start fresh.

    The head is kept only when the checkpoint was trained on exactly these class names in this
    order; a head of the same size but for other classes is re-initialised too, since its rows
    would mean the wrong classes.
    """
    model, info = hf_cls.from_pretrained(
        checkpoint, id2label=labels.id2label, label2id=labels.label2id,
        ignore_mismatched_sizes=True, output_loading_info=True, **overrides)
    fresh = set(info.get("missing_keys", ())) | {k[0] for k in info.get("mismatched_keys", ())}
    if checkpoint_class_names(config_dict) != list(labels.names):
        head = model.get_submodule(classifier)
        if not any(k.startswith(classifier + ".") for k in fresh):
            head.reset_parameters()
            fresh |= {f"{classifier}.{n}" for n, _ in head.named_parameters()}
    params = dict(model.named_parameters())
    fresh = {k for k in fresh if k in params}  # buffers such as MaskFormer's loss weights are rebuilt anyway
    if fresh:
        modules = sorted({k.rsplit(".", 1)[0] for k in fresh})
        shown = ", ".join(modules[:8]) + (f" (+{len(modules) - 8} more)" if len(modules) > 8 else "")
        log.info("%s: %d weight tensors re-initialised for the %d chosen classes: %s",
                 checkpoint, len(fresh), labels.num_classes, shown)
    return model


def load_processor(processor_cls: Any, source: str | Path | None, **settings: Any) -> Any:
    """The checkpoint's Pil processor with segkit's settings, or a default one if it has none."""
    if source is not None:
        try:
            return processor_cls.from_pretrained(str(source), **settings)
        except OSError:
            log.info("%s has no preprocessor_config.json; using %s defaults", source, processor_cls.__name__)
    return processor_cls(**settings)
