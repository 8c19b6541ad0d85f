"""The evaluate module script (`segkit_iou.py`), loaded by path: see `segkit.evaluation.metrics.EVALUATE_MODULE`.

This file only makes the folder a package, so that wheels ship the script."""
