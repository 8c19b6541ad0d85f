"""Start a new classifier from what the checkpoint's classifier knew about the chosen classes.

A checkpoint trained on ADE20K already segments `person`, `door`, `painting`; a segkit model
trained on all CamVid classes already has a row for `car`. When the class list changes, the
classifier must change shape, but its rows need not start at random: each new class is built from
the checkpoint rows of the source classes the selection put into it (a kept class: its own row; a
merged class, or `background` made of everything else: its members' rows).

For a softmax classifier, the probability of a group is the sum of its members' probabilities,
so the logit that reproduces it is log-sum-exp of the members' logits, which is not linear in the
features. Two linear stand-ins:

- `mean`: the members' mean row, bias shifted by log(members): exact when the members agree.
- `fit`: a least-squares fit of log-sum-exp of the members' logits on features the checkpoint
  computes for a few training images. Exact for a single member; the best linear reproduction of
  the grouped prediction otherwise. This is the default (bench/bench_head_init.py measured it).

MaskFormer's and Mask2Former's `class_predictor` works on query embeddings rather than pixels, and
keeps its "no object" row. Matching goes by the source names the class selection resolved
(`LabelSet.sources`), and a segkit checkpoint's own sources count too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
from torch import nn

from segkit.labels import LabelSet

log = logging.getLogger("segkit.models")

FIT_PIXELS_PER_IMAGE = 4096
"""Feature vectors sampled from each image of a pixel classifier for the fit."""
Method = Literal["fit", "mean"]


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


@dataclass
class CarriedHead:
    """A checkpoint's classifier, kept aside while the model gets one for the new classes."""

    weight: torch.Tensor
    """(K + extra, D): one row per checkpoint class, then MaskFormer's "no object" row."""
    bias: torch.Tensor | None
    labels: LabelSet
    """The checkpoint's classes (with their own sources when segkit trained it)."""
    extra: int = 0
    """Rows after the classes that every label set keeps (MaskFormer's "no object")."""

    @classmethod
    def of(cls, module: nn.Module, labels: LabelSet) -> "CarriedHead":
        weight = module.weight.detach().reshape(module.weight.shape[0], -1).clone()
        bias = module.bias.detach().clone() if module.bias is not None else None
        return cls(weight, bias, labels, extra=weight.shape[0] - labels.num_classes)

    def rows_for(self, labels: LabelSet, aliases: Mapping[str, Sequence[str]] | None = None) -> list[list[int]]:
        """For each new class, the checkpoint rows of the source classes merged into it.

        Names match through their aliases on both sides: `aliases` gives the dataset's (ADE20K's
        objectInfo150 `windowpane;window`), and a checkpoint name that is a list (detectron2's
        `"painting, picture"`) answers to each of its parts, as does a segkit checkpoint's class to
        the sources it was made from.
        """
        table = CheckpointNames(self.labels)
        groups = labels.sources or tuple((n,) for n in labels.names)
        return [sorted({k for n in group if (k := table.match(dataset_keys(n, (aliases or {}).get(n, ())))) is not None})
                for group in groups]


def _parts(name: str) -> list[str]:
    """A label-table entry as its names: detectron2 lists them with ", ", objectInfo150 with ";"."""
    return [p for p in re.split(r"[;,]", str(name)) if _key(p)]


def dataset_keys(name: str, aliases: Sequence[str] = ()) -> list[str]:
    """The keys a dataset class answers to, best first: its name, its aliases, then the part after a
    "group-" prefix (sidewalk's `human-person` is a person)."""
    keys = [_key(name), *(_key(p) for p in _parts(name)), *(_key(a) for a in aliases)]
    if "-" in str(name):
        keys.append(_key(str(name).split("-", 1)[1]))
    return list(dict.fromkeys(k for k in keys if k))


class CheckpointNames:
    """A checkpoint's label table, looked up at three levels, each only where it is unambiguous:
    the whole entry (`"window "`), its first name (`painting` of `"painting, picture"`), any of its
    names (`picture`). `screen` is the first name of one ADE entry and a later name of three."""

    def __init__(self, labels: LabelSet) -> None:
        self.levels: list[dict[str, set[int]]] = [{}, {}, {}]
        for k, name in enumerate(labels.names):
            parts = _parts(name)
            self._add(0, name, k)
            if parts:
                self._add(1, parts[0], k)
            for part in parts:
                self._add(2, part, k)
        for k, group in enumerate(labels.sources):  # what a segkit checkpoint's classes were made from
            for name in group:
                self._add(1, name, k)
                for part in _parts(name):
                    self._add(2, part, k)

    def _add(self, level: int, name: str, k: int) -> None:
        self.levels[level].setdefault(_key(name), set()).add(k)

    def match(self, keys: Sequence[str]) -> int | None:
        """The checkpoint row for a dataset class's keys (best first), or None. A better key wins
        over a closer level: ADE's `screen door;screen` is detectron2's `"screen door, screen"`,
        not its `"screen"`."""
        for key in keys:
            for level in self.levels:
                rows = level.get(key, set())
                if len(rows) == 1:
                    return next(iter(rows))
        return None


def describe_carry(rows: list[list[int]], carried: CarriedHead, labels: LabelSet) -> str:
    """One banner line: which classes start from which checkpoint classes."""
    parts = []
    for name, members in zip(labels.names, rows):
        if not members:
            parts.append(f"{name} (new)")
        elif len(members) == 1 and _key(carried.labels.names[members[0]]) == _key(name):
            parts.append(name)
        elif len(members) <= 3:
            parts.append(f"{name} <- {' + '.join(carried.labels.names[k].strip() for k in members)}")
        else:
            parts.append(f"{name} <- {len(members)} classes")
    carried_rows = sum(1 for r in rows if r)
    return f"{carried_rows} of {labels.num_classes} classifier rows from the checkpoint: {', '.join(parts)}"


def carries(rows: list[list[int]], labels: LabelSet) -> bool:
    """Worth carrying only when a chosen class (not just background) is in the checkpoint: a
    background row built from, say, `sky` alone would not stand for everything else."""
    return any(rows[c] for c in labels.foreground_ids)


@torch.no_grad()
def new_rows(features: torch.Tensor, carried: CarriedHead, rows: list[list[int]],
             method: Method = "fit") -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,)) for the new classes; rows without members are left at zero (the
    caller keeps its fresh initialisation there). `features` (N, D) feed the fit."""
    w_old = carried.weight.double()
    b_old = carried.bias.double() if carried.bias is not None else torch.zeros(w_old.shape[0], dtype=torch.float64)
    d = w_old.shape[1]
    weight = torch.zeros(len(rows), d, dtype=torch.float64)
    bias = torch.zeros(len(rows), dtype=torch.float64)
    x = features.double()
    logits = x @ w_old.T + b_old if method == "fit" else None
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1) if method == "fit" else None
    for c, members in enumerate(rows):
        if not members:
            continue
        if len(members) == 1:  # exact: the class keeps its own row
            weight[c], bias[c] = w_old[members[0]], b_old[members[0]]
        elif method == "mean":
            weight[c] = w_old[members].mean(0)
            bias[c] = b_old[members].mean() + torch.log(torch.tensor(float(len(members)), dtype=torch.float64))
        else:
            target = torch.logsumexp(logits[:, members], dim=1, keepdim=True)
            solution = torch.linalg.lstsq(design, target).solution[:, 0]
            weight[c], bias[c] = solution[:d], solution[d]
    return weight.float(), bias.float()


@torch.no_grad()
def classifier_inputs(model: nn.Module, classifier: nn.Module, batches: Iterable[torch.Tensor],
                      generator: torch.Generator) -> torch.Tensor:
    """(N, D) features entering `classifier` for the given image batches: sampled pixels of a 1x1
    conv's input, or every query of a linear one."""
    seen: list[torch.Tensor] = []

    def grab(_module: nn.Module, inputs: tuple, _output: Any) -> None:
        x = inputs[0].detach().float()
        if x.ndim == 4:  # (B, D, h, w): pixels
            x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
            keep = torch.randperm(len(x), generator=generator)[: FIT_PIXELS_PER_IMAGE * inputs[0].shape[0]]
            x = x[keep.to(x.device)]
        seen.append(x.reshape(-1, x.shape[-1]).cpu())

    handle = classifier.register_forward_hook(grab)
    was_training = model.training
    model.eval()
    try:
        for pixels in batches:
            model(pixels)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(seen)


@torch.no_grad()
def install(model: Any, carried: CarriedHead, rows: list[list[int]], batches: Iterable[torch.Tensor],
            method: Method = "fit", seed: int = 0) -> None:
    """Write the new rows into `model`'s classifier (`model.classifier_name`); classes without a
    member keep their fresh initialisation, and MaskFormer's "no object" row is the checkpoint's."""
    classifier = model.get_submodule(model.classifier_name)
    features = classifier_inputs(model, classifier, batches, torch.Generator().manual_seed(seed)) \
        if method == "fit" else torch.zeros(0, carried.weight.shape[1])
    weight, bias = new_rows(features, carried, rows, method)
    shape = classifier.weight.shape
    flat = classifier.weight.view(shape[0], -1)
    for c, members in enumerate(rows):
        if members:
            flat[c] = weight[c].to(flat)
            if classifier.bias is not None:
                classifier.bias[c] = bias[c].to(classifier.bias)
    for e in range(1, carried.extra + 1):  # "no object": what the checkpoint's queries learned to say
        flat[-e] = carried.weight[-e].to(flat)
        if classifier.bias is not None and carried.bias is not None:
            classifier.bias[-e] = carried.bias[-e].to(classifier.bias)
