"""A new classifier that starts from what the checkpoint knows (segkit.models.head_init), fitted
on the features of a few training images before step 1."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset

from segkit.config.recipe import Recipe
from segkit.data.dataset import DataBundle
from segkit.infer.scores import eval_transform, group_by_shape
from segkit.models.base import SegModel
from segkit.models.head_init import carries, describe_carry, install

HEAD_FIT_IMAGES = 16
"""Training images whose features fit a classifier built from the checkpoint's (head_init.py)."""


def carry_head(model: SegModel, data: DataBundle, recipe: Recipe) -> tuple[str | None, bool]:
    """Build the new classifier from the checkpoint's rows for the chosen classes (head_init.py),
    fitted on the features of a few training images. Returns a line for the banner (None when
    there was no other head to start from) and whether rows were carried over."""
    carried, model.carried_head = model.carried_head, None
    if carried is None:
        return model.head_note, False
    source = data.source
    aliases = {source.class_names[i]: names for i, names in source.aliases.items() if i in source.class_names}
    rows = carried.rows_for(data.labels, aliases)
    if not carries(rows, data.labels):
        chosen = ", ".join(data.labels.names[c] for c in data.labels.foreground_ids)
        return f"random classifier: none of {chosen} is a class of the checkpoint; its other weights carry over", False
    split = data.val if isinstance(data.train, IterableDataset) else data.train  # a stream has no .raw
    transform = eval_transform(model)
    inputs = [transform(split.raw(i)[0]) for i in range(min(HEAD_FIT_IMAGES, len(split)))]
    install(model, carried, rows, (torch.stack([inputs[i] for i in g]) for g in group_by_shape(inputs)),
            seed=recipe.train.seed)
    return describe_carry(rows, carried, data.labels), True
