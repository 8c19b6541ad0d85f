"""Model families behind one interface.

registry.py (the one table of families) -> build.py (`build_model` for training, `load_model`
for a saved model) -> base.py (`SegModel` in, `SegOutput` out: all the rest of segkit sees) ->
hf.py (checkpoint plumbing), locate.py (Hub id or folder), head_init.py (a new head from the
checkpoint's rows) -> one module per family: segformer.py, maskformer.py (+ Mask2Former),
vit.py (UperNet) + vit_linear.py -> outputs.py (any family's output -> (B, C, h, w) scores).

The public names below load on first use: the recipe reads the registry while it is being
defined, and the families need the recipe's types, so this package imports nothing at load.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAMILIES", "ModelError", "SegModel", "SegOutput", "build_model", "load_model", "to_scores"]

_PUBLIC = {
    "FAMILIES": "segkit.models.registry",
    "ModelError": "segkit.models.base",
    "SegModel": "segkit.models.base",
    "SegOutput": "segkit.models.base",
    "build_model": "segkit.models.build",
    "load_model": "segkit.models.build",
    "to_scores": "segkit.models.outputs",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'segkit.models' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
