"""segkit: fine-tune transformer models for semantic segmentation on the classes you care about.

Data flows through the package in this order:

    source (data/source, data/sources) -> class selection (data/classes) -> audit (data/audit)
    -> augment (data/augment) -> sampling and loaders (data/sampling, data/loaders)
    -> model (models/) -> inference (inference: pixels -> scores at label size)
    -> loss (losses) -> training (train) -> metrics (metrics, evaluation)
    -> overlays and reports (overlays, report) -> prediction (predict) -> export (hub)

`run_folder` owns the on-disk layout; `config` the recipe; `labels` the label set and 255.
"""

import os

# albumentations calls PyPI at import unless told not to; importing segkit never touches the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from segkit.config import Recipe, RecipeError, load_recipe  # noqa: E402
from segkit.labels import IGNORE_INDEX, LabelSet  # noqa: E402

__all__ = ["IGNORE_INDEX", "LabelSet", "Recipe", "RecipeError", "load_recipe"]
__version__ = "0.1.0"
