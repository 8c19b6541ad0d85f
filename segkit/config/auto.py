"""The `auto` recipe settings: values that depend on the rest of the recipe (today: rare-class
handling, which is worth having whenever `classes.others` is `background`). They are resolved once,
when a recipe is loaded or first used, so the saved recipe holds plain values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segkit.config.recipe import Recipe

RARE_CLASS_DEFAULTS = {"augment.cat_max_ratio": (0.75, 1.0), "loss.class_weights": ("sqrt_inverse", None),
                       "train.sampler": ("rare", "uniform")}
"""The `auto` settings: (value when others become background, value otherwise)."""


def resolve_auto(recipe: Recipe) -> None:
    """Turn `auto` settings into values; the saved recipe holds the values. What was turned on and
    why goes to `recipe.auto_note`, for the training banner. A no-op on a resolved recipe, so every
    entry point may call it (load_recipe, build_data, train)."""
    note = _resolve(recipe)
    if note or not hasattr(recipe, "auto_note"):
        recipe.auto_note = note  # type: ignore[attr-defined]  # not a setting: never saved


def _resolve(recipe: Recipe) -> str | None:
    on = recipe.classes.others == "background"
    chosen = []
    for key, (if_background, otherwise) in RARE_CLASS_DEFAULTS.items():
        section, name = key.split(".")
        config = getattr(recipe, section)
        if getattr(config, name) != "auto":
            continue
        if key == "train.sampler" and recipe.data.streaming:  # a stream has no images to draw again
            if_background = otherwise
        setattr(config, name, if_background if on else otherwise)
        if on and if_background != otherwise:
            chosen.append(f"{key}={if_background}")
    if not chosen:
        return None
    return ("rare-class handling on, since classes.others is background (which then holds most pixels): "
            + ", ".join(chosen) + " (set them to turn it off)")


def resolved(value: Any, key: str) -> Any:
    """`value`, unless it is a still-unresolved `auto` (a section config built by hand, outside a
    recipe): only the whole recipe knows whether other classes become background."""
    if value == "auto":
        raise ValueError(f"{key}: 'auto' is resolved from the whole recipe (segkit.config.auto.resolve_auto, run by "
                         f"load_recipe); when building this section by hand, give a value.")
    return value
