"""The recipe: typed dataclasses read from one flat YAML file, checked once, `auto` resolved once.

sections.py (the six sections, a docstring per field) -> fields.py (typed YAML: unknown keys get
"did you mean", wrong types name the field) -> checks.py (ranges, settings that go together) ->
auto.py (what the `auto` settings become, from the whole recipe) -> recipe.py (`Recipe`,
`load_recipe`, `--set` overrides).
"""

from segkit.config.recipe import Recipe, RecipeError, load_recipe, save_recipe
from segkit.config.sections import (AugmentConfig, ClassesConfig, DataConfig, InputSpec, LossConfig, ModelConfig,
                                    TrainConfig)

__all__ = ["AugmentConfig", "ClassesConfig", "DataConfig", "InputSpec", "LossConfig", "ModelConfig", "Recipe",
           "RecipeError", "TrainConfig", "load_recipe", "save_recipe"]
