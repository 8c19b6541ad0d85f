"""`build_model` for training, `load_model` for a saved model: each family through the registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from segkit.config.sections import InputSpec, LossConfig, ModelConfig
from segkit.labels import LabelSet
from segkit.models import vit
from segkit.models.base import ModelError, SegModel
from segkit.models.locate import resolve_model_dir
from segkit.models.maskformer import Mask2FormerSeg, MaskFormerSeg
from segkit.models.registry import FAMILIES, family_of, unknown_family
from segkit.models.segformer import SegformerSeg

log = logging.getLogger(__name__)


BUILDERS: dict[str, Any] = {b.family: b for b in (SegformerSeg, MaskFormerSeg, Mask2FormerSeg, vit)}
"""Family name (segkit.models.registry) -> what builds it: `build(cfg, labels, loss, spec)` and
`load(folder)`, as classmethods of the family's SegModel or functions of its module (vit, whose
two heads are two classes)."""


def _builder(name: str | None) -> Any:
    if name not in BUILDERS:
        raise ModelError(unknown_family(name))
    return BUILDERS[name]


def build_model(cfg: ModelConfig, labels: LabelSet, loss: LossConfig | None = None,
                spec: InputSpec | None = None) -> SegModel:
    """A model for `labels`: pretrained from `cfg.checkpoint`, or random weights at `cfg.size`.

    The head always gets one output per class of `labels`: a checkpoint trained on other classes
    (or more, or fewer) keeps its backbone and gets a fresh classifier. `spec` says how images are
    fed outside training (`augment.eval_mode`); the saved image processor follows it.
    """
    builder = _builder(cfg.family)
    if bool(cfg.checkpoint) == bool(cfg.size):
        raise ModelError("Set exactly one of model.checkpoint (a Hub id or folder, e.g. "
                         f"{FAMILIES[cfg.family].default_checkpoint}) and model.size (random weights, e.g. tiny).")
    model = builder.build(cfg, labels, loss or LossConfig(), spec or InputSpec("none"))
    _apply_switches(model, cfg)
    model.freeze_never_used()  # several processes need a gradient for every trainable parameter
    return model.train()


def load_model(path: str | Path, revision: str | None = None, token: str | bool | None = None) -> SegModel:
    """Reload a saved model, in eval mode: a folder written by `save_pretrained` or `segkit export`,
    a run folder (its model/), or a Hub model id (with `revision`; the token comes from `token`,
    HF_TOKEN or `hf auth login`). The family is read from its config.json; a plain transformers
    folder of a known model type loads too."""
    folder = resolve_model_dir(path, revision, token)
    config = json.loads((folder / "config.json").read_text())
    name = family_of(config)
    if name is None:
        raise ModelError(f"{path}: model_type '{config.get('model_type')}' is not a segkit family "
                         f"({', '.join(FAMILIES)}).")
    return _builder(name).load(folder).eval()


def _apply_switches(model: SegModel, cfg: ModelConfig) -> None:
    """Memory/speed switches from the recipe, in the order that keeps them compatible."""
    if cfg.freeze_backbone:
        model.freeze_backbone()
    if cfg.gradient_checkpointing and not model.enable_gradient_checkpointing():
        log.warning("%s has no gradient checkpointing; model.gradient_checkpointing is ignored", model.family)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        model.channels_last = True  # inputs are converted in forward, so the convs stay NHWC
    if cfg.compile:
        # In place (nn.Module.compile): the object stays a SegModel and its state_dict keys keep
        # their names, so save_pretrained and load_model work unchanged.
        model.compile()
