"""The one table of model families. Recipe validation, "did you mean" errors, reading a saved
model's family from its config.json and the README's family table all come from `FAMILIES`.

Plain data that imports nothing, so the recipe can check `model.family` against it at load;
`segkit.models.build` binds each name to the code that builds and loads it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    default_checkpoint: str
    """The Hub id recipes start from by default; also the example in error messages."""
    model_types: tuple[str, ...]
    """config.json `model_type` values this family loads (segkit's own record, `segkit_family`, wins)."""
    good_for: str
    """One line for the README's family table."""
    has_own_loss: bool = False
    """Trains on its own loss (MaskFormer's and Mask2Former's set losses); otherwise the trainer
    applies segkit's pixel loss (`loss.*`) to the scores. `SegModel.has_own_loss` reads this."""
    query_based: bool = False
    """Scores pixels with class queries times mask queries (MaskFormer, Mask2Former): its scores
    are probabilities, not per-pixel logits, and transformers' `pipeline` needs
    `subtask="semantic"` for it."""


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("segformer", "nvidia/mit-b0", ("segformer",), "the light default: fast, any input size, CPU-friendly"),
    Family("maskformer", "facebook/maskformer-swin-base-ade", ("maskformer",),
           "the strongest start for ADE-like scenes: its pixel decoder already knows 150 classes", has_own_loss=True, query_based=True),
    Family("mask2former", "facebook/mask2former-swin-base-ade-semantic",
           ("mask2former",), "as MaskFormer, with masked attention: better small objects", has_own_loss=True,
           query_based=True),
    Family("vit", "facebook/dinov2-small",
           ("vit", "dinov2", "dinov2_with_registers", "segkit-vit", "upernet"),
           "strong frozen or lightly tuned features (DINOv2 or ViT encoder, UperNet or linear head)"),
)}

VIT_BACKBONES = ("dinov2", "dinov2_with_registers")
"""UperNet backbones the vit family builds and loads (UperNet on ConvNeXt or Swin is no vit)."""


def unknown_family(name: str | None) -> str:
    close = difflib.get_close_matches(str(name), list(FAMILIES), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"model.family: '{name}' is unknown.{hint} Choose one of: {', '.join(FAMILIES)}."


def family_of(config_dict: dict[str, Any]) -> str | None:
    """The segkit family of a config.json: segkit's own record, else by model type."""
    if config_dict.get("segkit_family"):
        return config_dict["segkit_family"]
    kind = config_dict.get("model_type", "")
    if kind == "upernet":
        backbone = (config_dict.get("backbone_config") or {}).get("model_type")
        return "vit" if backbone in VIT_BACKBONES else None
    return next((f.name for f in FAMILIES.values() if kind in f.model_types), None)
