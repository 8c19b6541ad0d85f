"""The `auto` recipe settings: values that depend on the rest of the recipe (today: rare-class
handling, which is worth having whenever `classes.others` is `background`). They are resolved once,
when a `Recipe` is made (its `__post_init__`), so everything downstream and the saved recipe see
plain values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segkit.config.recipe import Recipe

RARE_CLASS_DEFAULTS = {"augment.cat_max_ratio": (0.75, 1.0), "loss.class_weights": ("sqrt_inverse", None),
                       "train.sampler": ("rare", "uniform")}
"""The `auto` settings: (value when others become background, value otherwise)."""


def resolve_auto(recipe: Recipe) -> str | None:
    """Turn `auto` settings into values, and say what was turned on and why (`Recipe.auto_note`).
    Called once, by `Recipe.__post_init__`."""
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
                         f"made with the Recipe); when building this section by hand, give a value.")
    return value
