"""Typed recipe sections from YAML values: each value is checked against its field's annotation,
unknown keys get the closest valid one suggested, and every problem is collected, not raised, so
a recipe's errors are reported together (`segkit.config.recipe.recipe_from_dict`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union


def _type_ok(value: Any, tp: Any) -> bool:
    """Structural check of a YAML value against a field annotation."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(_type_ok(a, k) and _type_ok(b, v) for a, b in value.items())
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _yaml_float(value: Any, tp: Any) -> Any:
    """PyYAML reads `1e-4` (no dot) as a string; accept it wherever a number is expected."""
    if isinstance(value, str) and _type_ok(1.5, tp) and not _type_ok(value, tp):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def build_section(cls: type, values: Any, prefix: str, errors: list[str]) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        errors.append(f"{prefix or 'recipe'}: expected a mapping of settings, got {values!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]  # init=False fields are derived
    kwargs = {}
    dot = f"{prefix}." if prefix else ""
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{dot}{close[0]}'?" if close else f" Valid keys: {', '.join(known)}."
            errors.append(f"{dot}{key}: unknown setting.{hint}")
            continue
        tp = hints[key]
        value = _yaml_float(value, tp)
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_section(tp, value, f"{dot}{key}", errors)
        elif not _type_ok(value, tp):
            errors.append(f"{dot}{key}: expected {_describe(tp)}, got {value!r}")
        else:
            kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)
