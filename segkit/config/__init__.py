"""The recipe: typed dataclasses read from one flat YAML file, checked once, `auto` resolved once.

recipe.py (the sections, `load_recipe`, `--set` overrides) <- fields.py (typed YAML: unknown keys
get "did you mean", wrong types name the field) -> auto.py (what the `auto` settings become, from
the whole recipe, at load).
"""

from segkit.config.recipe import (
    AugmentConfig,
    ClassesConfig,
    DataConfig,
    InputSpec,
    LossConfig,
    ModelConfig,
    Recipe,
    RecipeError,
    TrainConfig,
    load_recipe,
    save_recipe,
)

__all__ = ["AugmentConfig", "ClassesConfig", "DataConfig", "InputSpec", "LossConfig", "ModelConfig", "Recipe",
           "RecipeError", "TrainConfig", "load_recipe", "save_recipe"]
