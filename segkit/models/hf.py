"""Checkpoint plumbing shared by the Hugging Face families: read a checkpoint's config, check that
it belongs to the family, load it for the chosen classes, say which weights are new, and keep the
label set and input spec in the config that `save_pretrained` writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PretrainedConfig

from segkit.config import InputSpec
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegModel

log = logging.getLogger("segkit.models")


class HFSegModel(SegModel):
    """A family that is one transformers `PreTrainedModel` (`self.model`) plus its processor.

    The model's config is what `save_pretrained` writes and what `load` reads back: it carries the
    label set, the family and the input spec, so a saved folder is complete on its own.
    """

    def __init__(self, model: nn.Module, labels: LabelSet, processor: Any, input_spec: InputSpec | None = None,
                 **size: Any) -> None:
        super().__init__(labels, processor, input_spec=input_spec, **size)
        self.model = model
        labels.write_to(model.config)
        model.config.segkit_family = self.family
        model.config.segkit_input = self.input_spec.to_dict()

    def set_input_spec(self, spec: InputSpec) -> None:
        super().set_input_spec(spec)
        if "model" in self._modules:  # SegModel.__init__ calls this before self.model exists
            self.model.config.segkit_input = spec.to_dict()

    def enable_gradient_checkpointing(self) -> bool:
        return enable_checkpointing(self.backbone())

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Hugging Face layout: config.json (+ segkit_labels), model.safetensors, processor."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self._processor.save_pretrained(out)

    @classmethod
    def saved_input_spec(cls, config: Any, processor: Any) -> InputSpec:
        """The input spec a saved model was evaluated with; for a plain transformers folder, the
        one its image processor describes."""
        stored = getattr(config, "segkit_input", None)
        if stored:
            return InputSpec.from_dict(stored)
        size = getattr(processor, "size", None) or {}
        get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
        if getattr(processor, "do_resize", False) and get("height") and get("width"):
            return InputSpec("resize", (int(get("height")), int(get("width"))))
        return InputSpec("none")


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


def load_for_labels(hf_cls: Any, checkpoint: str, config_dict: dict[str, Any], labels: LabelSet,
                    classifier: str, **overrides: Any) -> nn.Module:
    """from_pretrained with a classifier for `labels`; log which weights start fresh.

    The head is kept only when the checkpoint was trained on exactly these class names in this
    order; a head of the same size but for other classes is re-initialised too, since its rows
    would mean the wrong classes.
    """
    # num_labels sizes the head; the names are written by HFSegModel (LabelSet.write_to), once.
    model, info = hf_cls.from_pretrained(checkpoint, num_labels=labels.num_classes, ignore_mismatched_sizes=True,
                                         output_loading_info=True, **overrides)
    fresh = set(info.get("missing_keys", ())) | {k[0] for k in info.get("mismatched_keys", ())}
    if LabelSet.from_config(config_dict).names != labels.names:
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
