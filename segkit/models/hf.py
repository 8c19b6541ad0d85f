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

from segkit.config.sections import InputSpec
from segkit.hub.explain import NETWORK_ERRORS, explain
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegModel
from segkit.models.head_init import CarriedHead
from segkit.models.locate import looks_local
from segkit.models.registry import family_of

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


def read_checkpoint_config(checkpoint: str, family: str, example: str) -> dict[str, Any]:
    """The config.json of a Hub id or local folder, checked to belong to `family`."""
    path = Path(checkpoint).expanduser()
    if looks_local(checkpoint) and not path.is_dir():
        raise ModelError(f"model.checkpoint '{checkpoint}' looks like a folder but does not exist. "
                         f"Fix the path, or give a Hub id such as {example}.")
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(checkpoint)
    except NETWORK_ERRORS as e:
        cause = e.__cause__ or e.__context__ or e  # transformers wraps the Hub's error in an OSError
        said = explain(cause, checkpoint, "model") or explain(e, checkpoint, "model") or str(e)
        raise ModelError(
            f"Could not load model.checkpoint '{checkpoint}'. The Hub said: {said}\n"
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
                    classifier: str, carry: bool = True, **overrides: Any) -> tuple[nn.Module, CarriedHead | None]:
    """from_pretrained with a classifier for `labels`; log which weights start fresh.

    The head is kept only when the checkpoint was trained on exactly these class names in this
    order. Otherwise it is replaced (a head of the same size but for other classes too, since its
    rows would mean the wrong classes), and with `carry` the checkpoint's classifier comes back
    beside the model, for `head_init` to build the new rows from.
    """
    note = head_note(config_dict, hf_cls, checkpoint)
    if note is not None:  # nothing of its head fits this model: no label table to read or keep
        log.info("%s: %s", checkpoint, note)
        return hf_cls.from_pretrained(checkpoint, num_labels=labels.num_classes, **overrides), None
    trained = LabelSet.from_config(config_dict)
    carried = None
    if carry and trained.names != labels.names and config_dict.get("id2label"):
        original = hf_cls.from_pretrained(checkpoint, **overrides)  # its own head, to keep aside
        carried = CarriedHead.of(original.get_submodule(classifier), trained)
        del original
    # num_labels sizes the head; the names are written by HFSegModel (LabelSet.write_to), once.
    model, info = hf_cls.from_pretrained(checkpoint, num_labels=labels.num_classes, ignore_mismatched_sizes=True,
                                         output_loading_info=True, **overrides)
    fresh = set(info.get("missing_keys", ())) | {k[0] for k in info.get("mismatched_keys", ())}
    head_is_new = any(k.startswith(classifier + ".") for k in fresh)
    if not head_is_new and keep_or_reset_head(model, classifier, trained, labels, checkpoint):
        fresh |= {f"{classifier}.{n}" for n, _ in model.get_submodule(classifier).named_parameters()}
    params = dict(model.named_parameters())
    fresh = {k for k in fresh if k in params}  # buffers such as MaskFormer's loss weights are rebuilt anyway
    if fresh:
        modules = sorted({k.rsplit(".", 1)[0] for k in fresh})
        shown = ", ".join(modules[:8]) + (f" (+{len(modules) - 8} more)" if len(modules) > 8 else "")
        log.info("%s: %d weight tensors re-initialised for the %d chosen classes: %s",
                 checkpoint, len(fresh), labels.num_classes, shown)
    return model, carried


def head_note(config_dict: dict[str, Any], hf_cls: Any, checkpoint: str) -> str | None:
    """None when the checkpoint holds `hf_cls`'s own classifier (a pixel classifier, or
    MaskFormer's query classifier); else the banner's word on its head. nvidia/mit-b0 is an
    ImageNet classifier (1000 classes, `crane` twice) and facebook/dinov2-small has no head: their
    label tables say nothing about pixels, so nothing of them is carried."""
    architectures = config_dict.get("architectures") or []
    if not architectures or hf_cls.__name__ in architectures:
        return None  # an old config without `architectures` is taken to be what it is loaded as
    arch = architectures[0]
    labels = len(config_dict.get("id2label") or {})
    if arch.endswith("ForImageClassification"):
        return (f"backbone only, head new: {checkpoint} is an image classifier ({arch}, {labels} classes), "
                "which has no pixel classifier to carry")
    return f"backbone only, head new: {checkpoint} has no segmentation head ({arch})"


def keep_or_reset_head(model: nn.Module, classifier: str, trained: LabelSet, wanted: LabelSet, where: str) -> bool:
    """Keep a classifier trained for exactly `wanted`'s names in order; otherwise put a fresh one
    in its place, sized for `wanted` (rows of other classes would mean the wrong classes).
    Returns True when the head is new."""
    if trained.names == wanted.names:
        return False
    old = model.get_submodule(classifier)
    extra = old.weight.shape[0] - trained.num_classes  # MaskFormer's "no object" row
    model.set_submodule(classifier, fresh_classifier(old, wanted.num_classes + extra))
    model.config.num_labels = wanted.num_classes
    log.info("%s: classifier re-initialised for the %d chosen classes (it was trained for %d others)",
             where, wanted.num_classes, trained.num_classes)
    return True


def fresh_classifier(old: nn.Module, rows: int) -> nn.Module:
    """A new classifier like `old` (Linear or 1x1 Conv2d) with `rows` outputs, default init."""
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, rows, bias=old.bias is not None)
    elif isinstance(old, nn.Conv2d):
        new = nn.Conv2d(old.in_channels, rows, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    else:
        raise TypeError(f"classifier {type(old).__name__} is neither Linear nor Conv2d")
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


def load_processor(processor_cls: Any, source: str | Path | None, **settings: Any) -> Any:
    """The checkpoint's Pil processor with segkit's settings, or a default one if it has none."""
    if source is not None:
        try:
            return processor_cls.from_pretrained(str(source), **settings)
        except OSError:
            log.info("%s has no preprocessor_config.json; using %s defaults", source, processor_cls.__name__)
    return processor_cls(**settings)
