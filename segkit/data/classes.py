"""Class selection: from a source's ids to the training ids of the classes a user picks.

The result is a lookup table applied to whole masks at once (`lut[mask]`). CamVid, with
`select: [car, pedestrian]`, `others: background` and its id 11 "unlabelled" ignored::

    source id    0 sky  1 building ... 8 car  9 pedestrian  10 bicyclist  11 unlabelled
    training id  0      0              1      2             0             255

    labels: 0 background, 1 car, 2 pedestrian; 255 = ignored (no loss, no metric)

With `others: ignore` there is no background class: car -> 0, pedestrian -> 1, everything
else -> 255. Merging (`{vehicle: [car, truck]}`) sends several source ids to one training id.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segkit.config.sections import ClassesConfig
from segkit.data.errors import DataError
from segkit.data.source import Source
from segkit.labels import IGNORE_INDEX, LabelSet

_INVALID = np.iinfo(np.uint16).max  # marks source ids that are not classes, in the checking table


def normalise_name(name: str) -> str:
    """Case, spaces, underscores and hyphens don't matter: "Traffic sign" ~ "traffic_sign"."""
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


@dataclass(frozen=True, eq=False)
class Selection:
    """The chosen label set and the table that maps source ids to its training ids."""

    labels: LabelSet
    lut: np.ndarray
    """uint8, one entry per source id (length = max source id + 1): training id or 255 (ignored)."""
    source_ids: dict[str, list[int]]
    """Training class name -> the source ids merged into it (for reports)."""
    unknown_ids: tuple[int, ...] = ()
    """Ids inside the table's range that the source does not name; a mask holding one is an error."""
    _table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The checking table covers at least 0..255 so that 255 in a mask, the universal "ignore"
        # value, maps to 255 even when the source does not name it (Pascal VOC borders).
        table = np.full(max(len(self.lut), IGNORE_INDEX + 1), _INVALID, dtype=np.uint16)
        table[: len(self.lut)] = self.lut
        table[list(self.unknown_ids)] = _INVALID
        if IGNORE_INDEX >= len(self.lut) or IGNORE_INDEX in self.unknown_ids:
            table[IGNORE_INDEX] = IGNORE_INDEX
        object.__setattr__(self, "_table", table)

    def apply(self, label_map: np.ndarray, strict: bool = True) -> np.ndarray:
        """Source ids -> training ids (uint8, 255 = ignored), for a whole mask in one lookup.

        Values that are not source classes raise a DataError naming them (the caller adds the
        file), or become 255 with `strict=False` (for drawing a faulty mask in a report).
        """
        if label_map.size and int(label_map.max()) >= len(self._table):
            if strict:
                self._raise_unknown(np.unique(label_map[label_map >= len(self._table)]))
            label_map = np.where(label_map >= len(self._table), IGNORE_INDEX, label_map)
        out = self._table[label_map]
        if out.size and int(out.max()) == _INVALID:
            if strict:
                self._raise_unknown(np.unique(label_map[out == _INVALID]))
            out[out == _INVALID] = IGNORE_INDEX
        return out.astype(np.uint8)

    def count(self, source_counts: np.ndarray) -> tuple[np.ndarray, int, list[int]]:
        """A histogram of source ids -> (pixels per training class, ignored pixels, unknown ids seen).

        Statistics use this on `np.bincount(mask)`, so they never remap pixels one by one.
        """
        n = len(source_counts)
        table = self._table if n <= len(self._table) else np.concatenate(
            [self._table, np.full(n - len(self._table), _INVALID, dtype=np.uint16)])
        table = table[:n]
        present = source_counts > 0
        unknown = np.flatnonzero(present & (table == _INVALID)).tolist()
        kept = present & (table < IGNORE_INDEX)
        per_class = np.bincount(table[kept], weights=source_counts[kept], minlength=self.labels.num_classes)
        ignored = int(source_counts[present & (table == IGNORE_INDEX)].sum())
        return per_class.astype(np.int64), ignored, unknown

    def _raise_unknown(self, values: np.ndarray) -> None:
        shown = ", ".join(str(int(v)) for v in values[:10])
        raise DataError(f"mask values {shown} are not classes of the source (known ids: 0..{len(self.lut) - 1}"
                        f"{', minus ' + str(list(self.unknown_ids)[:10]) if self.unknown_ids else ''}; "
                        "255 = ignored). Fix the masks, or name these ids in data.class_names.")


class _Names:
    """Resolves what a user wrote (name, alias, id) to a source id, suggesting on typos."""

    def __init__(self, source: Source) -> None:
        self.names = source.class_names
        # priority 0: display names; 1: aliases; 2: the part after a "group-" prefix (sidewalk)
        self.index: list[dict[str, set[int]]] = [{}, {}, {}]
        self.spelled: dict[str, str] = {}
        for i, name in self.names.items():
            self._add(0, name, i)
            for alias in source.aliases.get(i, []):
                self._add(1, alias, i)
            if "-" in name:
                self._add(2, name.split("-", 1)[1], i)

    def _add(self, priority: int, name: str, i: int) -> None:
        key = normalise_name(name)
        self.index[priority].setdefault(key, set()).add(i)
        self.spelled.setdefault(key, name)

    def resolve(self, entry: Any, where: str) -> int:
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise DataError(f"{where}: {entry!r} is not a class name or id.")
        if isinstance(entry, int) or entry.strip().isdigit():
            i = int(entry)
            if self.names and i not in self.names:
                raise DataError(f"{where}: id {i} is not a source class (ids {min(self.names)}..{max(self.names)}).")
            return i
        key = normalise_name(entry)
        for level in self.index:
            ids = level.get(key, set())
            if len(ids) == 1:
                return next(iter(ids))
            if len(ids) > 1:
                options = ", ".join(f"{self.names[i]} (id {i})" for i in sorted(ids))
                raise DataError(f"{where}: '{entry}' matches several classes: {options}. Use a full name or the id.")
        raise DataError(f"{where}: unknown class '{entry}'.{self._suggest(key)}")

    def _suggest(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self.spelled), n=3, cutoff=0.6)
        if close:
            return " Did you mean " + " or ".join(f"'{self.spelled[c]}'" for c in close) + "?"
        if len(self.names) <= 40:
            return " Classes: " + ", ".join(self.names.values())
        return " Class names are listed by `segkit inspect`."


def _groups(select: Any, names: _Names, where: str) -> list[tuple[str, list[int]]]:
    """`classes.select` -> [(training name, source ids)] in order."""
    if isinstance(select, dict):
        select = [{k: v} for k, v in select.items()]
    groups = []
    for n, entry in enumerate(select):
        if isinstance(entry, dict):
            for new_name, members in entry.items():
                members = members if isinstance(members, list) else [members]
                if not members:
                    raise DataError(f"{where}: '{new_name}' merges no classes; list at least one.")
                groups.append((str(new_name), [names.resolve(m, f"{where}.{new_name}") for m in members]))
        else:
            i = names.resolve(entry, f"{where}[{n}]")
            shown = names.names.get(i, str(i)) if isinstance(entry, int) or str(entry).isdigit() else str(entry).strip()
            groups.append((shown, [i]))
    return groups


def select_classes(source: Source, cfg: ClassesConfig) -> Selection:
    """Build the label set and lookup table for `cfg` over `source`'s class ids.

    Training names are spelled as the user wrote them (`traffic sign`, not `object-trafficsign`);
    classes picked by id, or kept by `select: null`, use the source's names.
    """
    names = _Names(source)
    explicit_ignore = cfg.ignore is not None
    ignored = {names.resolve(e, "classes.ignore") for e in cfg.ignore} if explicit_ignore else set(source.ignore_ids)
    if cfg.select is None:
        groups = [(n, [i]) for i, n in sorted(source.class_names.items()) if i not in ignored]
    else:
        groups = _groups(cfg.select, names, "classes.select")
    chosen = [i for _, ids in groups for i in ids]
    twice = sorted({i for i in chosen if chosen.count(i) > 1})
    if twice:
        raise DataError(f"classes.select: {[source.class_names.get(i, i) for i in twice]} chosen more than once.")
    clash = sorted(set(chosen) & ignored)
    if clash and explicit_ignore:
        raise DataError(f"classes: {[source.class_names.get(i, i) for i in clash]} are both selected and in classes.ignore.")
    ignored -= set(chosen)  # picking an "unlabeled" class by name is a deliberate choice

    bg_key = normalise_name(cfg.background_name)
    merged_into_bg = [i for name, ids in groups if normalise_name(name) == bg_key for i in ids]
    if cfg.others == "background":
        groups = [(name, ids) for name, ids in groups if normalise_name(name) != bg_key]
    if not groups:
        listed = list(source.class_names.values())
        raise DataError("classes.select: no classes left to train on. Pick at least one class "
                        f"(source classes: {', '.join(listed[:30])}{' ...' if len(listed) > 30 else ''}).")
    # A background class exists only if something lands in it: keeping all 150 ADE20K classes
    # must not add a 151st that never has a pixel.
    others = [i for i in sorted(source.class_names) if i not in ignored and i not in chosen]
    background = cfg.others == "background" and bool(others or merged_into_bg)
    class_names = ([cfg.background_name] if background else []) + [name for name, _ in groups]
    source_ids = {cfg.background_name: others + merged_into_bg} if background else {}
    source_ids.update({name: list(ids) for name, ids in groups})
    spelled = lambda ids: tuple(source.class_names.get(i, str(i)) for i in ids)  # noqa: E731
    try:
        labels = LabelSet(names=tuple(class_names), background=0 if background else None,
                          sources=tuple(spelled(source_ids[n]) for n in class_names),
                          ignored_sources=spelled(sorted(ignored)))
    except ValueError as e:
        raise DataError(f"classes.select: {e}") from None

    size = max([*source.class_names, *ignored, *chosen, 0]) + 1
    # others -> background (0) or ignored (255); 255 is never a class: the loss and metric skip it
    lut = np.full(size, 0 if background else IGNORE_INDEX, dtype=np.uint8)
    for train_id, (name, ids) in enumerate(groups, start=1 if background else 0):
        lut[ids] = train_id
    lut[sorted(ignored)] = IGNORE_INDEX
    unknown = [i for i in range(size) if i not in source.class_names and i not in ignored and i not in chosen]
    lut[unknown] = IGNORE_INDEX
    return Selection(labels, lut, source_ids, tuple(unknown) if source.class_names else ())


def describe_selection(selection: Selection, source: Source) -> str:
    """One line per training class with the source classes it takes, for logs and reports."""
    lines = []
    for train_id, name in enumerate(selection.labels.names):
        ids = selection.source_ids.get(name, [])
        members = ", ".join(source.class_names.get(i, str(i)) for i in ids[:8]) + (" ..." if len(ids) > 8 else "")
        lines.append(f"{train_id:>3} {name}: {members}")
    ignored = [source.class_names.get(i, str(i)) for i in np.flatnonzero(selection.lut == IGNORE_INDEX)
               if i not in selection.unknown_ids]
    lines.append(f"255 ignored: {', '.join(ignored[:8]) or '(none)'}{' ...' if len(ignored) > 8 else ''}")
    return "\n".join(lines)

