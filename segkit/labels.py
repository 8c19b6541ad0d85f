"""The one label set that every stage reads: model head, loss, metrics, overlays, model card.

Training ids are 0..C-1 in the order of `LabelSet.names`. The value 255 (`IGNORE_INDEX`) means
"ignored": the loss skips it, the metric skips it, augmentation pads with it, and source pixels
marked unlabeled/other become it. It is never a class id, so a label set holds at most 255 classes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

IGNORE_INDEX = 255
"""Label value that the loss, the metric and the overlays ignore. Padding writes it too."""

# Background is drawn dark so that the chosen classes stand out in overlays.
BACKGROUND_COLOR = (40, 40, 40)


def default_palette(n: int, background: int | None = None) -> list[tuple[int, int, int]]:
    """Well-separated colours: golden-ratio hue steps, alternating brightness.

    Deterministic, so the same label set always gets the same colours across runs and reports.
    """
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    if background is not None and 0 <= background < n:
        colors[background] = BACKGROUND_COLOR
    return colors


@dataclass(frozen=True)
class LabelSet:
    """Names, colours and the background id of the classes a model is trained on.

    Example, CamVid reduced to two classes with others -> background::

        LabelSet(names=("background", "car", "pedestrian"), background=0)
        # training ids: 0 background, 1 car, 2 pedestrian, 255 ignored
    """

    names: tuple[str, ...]
    """Class names; the position is the training id."""
    background: int | None = None
    """Id of the catch-all background class, or None when "others" are ignored instead."""
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    """RGB colour per class, same order as `names`. Empty means `default_palette`."""
    ignore_index: int = IGNORE_INDEX
    """Label value that is never scored. Always 255 in segkit; stored so configs are explicit."""
    sources: tuple[tuple[str, ...], ...] = ()
    """Per class, the source dataset's class names merged into it (background: every class not
    chosen), as the class selection resolved them. Empty when unknown. Model cards show it; head
    initialisation matches checkpoint classes by it."""
    ignored_sources: tuple[str, ...] = ()
    """Source class names whose pixels became 255."""

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        object.__setattr__(self, "names", names)
        if not names:
            raise ValueError("A label set needs at least one class.")
        if len(names) >= IGNORE_INDEX:
            raise ValueError(f"A label set holds at most {IGNORE_INDEX - 1} classes; got {len(names)}.")
        if len(set(n.lower() for n in names)) != len(names):
            raise ValueError(f"Class names must be unique (case-insensitive): {list(names)}")
        if self.background is not None and not 0 <= self.background < len(names):
            raise ValueError(f"background={self.background} is not a class id of {list(names)}")
        palette = tuple(tuple(int(v) for v in c) for c in self.palette) or tuple(
            default_palette(len(names), self.background)
        )
        if len(palette) != len(names):
            raise ValueError(f"palette has {len(palette)} colours for {len(names)} classes")
        object.__setattr__(self, "palette", palette)
        sources = tuple(tuple(str(n) for n in group) for group in self.sources)
        if sources and len(sources) != len(names):
            raise ValueError(f"sources has {len(sources)} groups for {len(names)} classes")
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "ignored_sources", tuple(str(n) for n in self.ignored_sources))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @property
    def foreground_ids(self) -> list[int]:
        """Ids scored in the foreground view: every class except background."""
        return [i for i in range(self.num_classes) if i != self.background]

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "background": self.background,
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "sources": [list(group) for group in self.sources],
            "ignored_sources": list(self.ignored_sources),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LabelSet":
        return cls(
            names=tuple(d["names"]),
            background=d.get("background"),
            palette=tuple(tuple(c) for c in d.get("palette") or ()),
            ignore_index=d.get("ignore_index", IGNORE_INDEX),
            sources=tuple(tuple(g) for g in d.get("sources") or ()),
            ignored_sources=tuple(d.get("ignored_sources") or ()),
        )

    def write_to(self, config: Any) -> None:
        """The one place a model's config learns its classes.

        `id2label`/`label2id` are what transformers, `pipeline` and the Hub widget read;
        `segkit_labels` adds what they have no field for (background id, palette).
        """
        config.id2label, config.label2id = self.id2label, self.label2id
        config.segkit_labels = self.to_dict()

    @classmethod
    def from_config(cls, config: Any) -> "LabelSet":
        """The label set a model config holds: a transformers config object or its parsed
        config.json. segkit's own `segkit_labels` wins; a plain transformers config gives its
        `id2label` (a class named "background", if any, becomes the background)."""
        get = config.get if isinstance(config, Mapping) else lambda key: getattr(config, key, None)
        stored = get("segkit_labels")
        if stored:
            return cls.from_dict(stored)
        id2label = {int(k): v for k, v in (get("id2label") or {}).items()}
        names: Sequence[str] = [id2label[i] for i in sorted(id2label)]
        background = next((i for i, n in enumerate(names) if n.lower() == "background"), None)
        return cls(names=tuple(names), background=background)


class LabelMismatchError(ValueError):
    """Weights trained for one label set met data or a recipe that selects another."""


def check_same_labels(trained: LabelSet, selected: LabelSet, what: str) -> None:
    """Refuse to mix label sets: scores, resumed weights and heads are meaningless across them.

    Names are compared in order, since the position of a name is its training id.
    """
    if tuple(trained.names) != tuple(selected.names):
        raise LabelMismatchError(
            f"{what} was trained for classes {list(trained.names)}, but this recipe selects "
            f"{list(selected.names)}. Use the recipe it was trained with (its run folder holds "
            "recipe.yaml), or change the recipe's classes section to match."
        )
