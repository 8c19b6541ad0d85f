"""The recipe: one flat YAML file, read into typed sections and checked once.

A recipe has six sections (data, classes, augment, model, loss, train), each a dataclass in
sections.py whose fields carry their own docstrings. `load_recipe` rejects unknown keys
(suggesting the closest, fields.py), wrong types and out-of-range values (checks.py), collects
every problem and raises them together; `--set section.key=value` overrides any field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segkit.config.auto import resolve_auto
from segkit.config.checks import check_recipe
from segkit.config.fields import build_section
from segkit.config.sections import AugmentConfig, ClassesConfig, DataConfig, LossConfig, ModelConfig, TrainConfig
from segkit.run_folder import write_text


class RecipeError(ValueError):
    """A recipe that cannot run. The message lists every problem with its field and the fix."""


@dataclass
class Recipe:
    name: str = "run"
    """Run name, used in the output folder and the model card."""
    data: DataConfig = field(default_factory=DataConfig)
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    auto_note: str | None = field(default=None, init=False, compare=False)
    """What the `auto` settings became and why, for the training banner: derived once, when the
    recipe is made (segkit.config.auto), whether from YAML or in Python; never read or saved."""

    def __post_init__(self) -> None:
        self.auto_note = resolve_auto(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) if dataclasses.is_dataclass(getattr(self, f.name))
                else getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    """Build and validate a recipe; raise one RecipeError listing every problem."""
    errors: list[str] = []
    recipe = build_section(Recipe, values or {}, "", errors)  # auto settings resolve as it is made
    check_recipe(recipe, errors)  # fields with a type error were left at their defaults, which pass
    if errors:
        raise RecipeError("Recipe has problems:\n  - " + "\n  - ".join(errors))
    return recipe


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-4", "model.size=tiny"]` -> nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise RecipeError(f"--set {pair!r}: expected key=value, e.g. --set train.lr=1e-4")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML, apply `--set` overrides, validate once."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file not found: {path}. Recipes shipped with segkit live in recipes/.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: expected a mapping of sections (data, classes, model, ...)")
    values = _merge(values, parse_overrides(overrides or []))
    return recipe_from_dict(values)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    write_text(Path(path), yaml.safe_dump(recipe.to_dict(), sort_keys=False))
