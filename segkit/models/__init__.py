"""Model families behind one interface: `build_model` for training, `load_model` for a saved folder.

Every family returns a `SegModel` whose `forward` gives `SegOutput(scores, loss)`; the rest of
segkit reads only that (see base.py and outputs.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch

from segkit.config import LossConfig, ModelConfig
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegModel, SegOutput, family_of
from segkit.models.maskformer import Mask2FormerSeg, MaskFormerSeg
from segkit.models.outputs import to_scores, upsample_scores
from segkit.models.segformer import SegformerSeg
from segkit.models.vit import ViTSeg

__all__ = ["FAMILIES", "ModelError", "SegModel", "SegOutput", "build_model", "load_model", "to_scores",
           "upsample_scores"]

log = logging.getLogger(__name__)

FAMILIES: dict[str, Callable[..., SegModel]] = {
    "segformer": SegformerSeg,
    "maskformer": MaskFormerSeg,
    "mask2former": Mask2FormerSeg,
    "vit": ViTSeg,
}
"""Family name -> SegModel class; each has `build(cfg, labels, loss)` and `load(path)`."""


def _family(name: str | None) -> type:
    if name not in FAMILIES:
        raise ModelError(f"Unknown model family '{name}'. Choose one of: {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def build_model(cfg: ModelConfig, labels: LabelSet, loss: LossConfig | None = None) -> SegModel:
    """A model for `labels`: pretrained from `cfg.checkpoint`, or random weights at `cfg.size`.

    The head always gets one output per class of `labels`: a checkpoint trained on other classes
    (or more, or fewer) keeps its backbone and gets a fresh classifier.
    """
    family = _family(cfg.family)
    if bool(cfg.checkpoint) == bool(cfg.size):
        raise ModelError("Set exactly one of model.checkpoint (a Hub id or folder, e.g. "
                         f"{family.default_checkpoint}) and model.size (random weights, e.g. tiny).")
    model = family.build(cfg, labels, loss or LossConfig())
    _apply_switches(model, cfg)
    return model.train()


def load_model(path: str | Path) -> SegModel:
    """Reload a folder written by `SegModel.save_pretrained`, in eval mode; the family is read from
    its config.json (a plain transformers folder of a known model type loads too). A run folder
    stands for the model/ inside it."""
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        path = path / "model"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path} has no config.json. Pass a folder written by save_pretrained or "
                         "`segkit export` (a training run's checkpoint folders hold one too).")
    config = json.loads(config_file.read_text())
    name = family_of(config)
    if name is None:
        raise ModelError(f"{config_file}: model_type '{config.get('model_type')}' is not a segkit family "
                         f"({', '.join(FAMILIES)}).")
    return _family(name).load(path).eval()


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

