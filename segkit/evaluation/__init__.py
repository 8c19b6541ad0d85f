"""Scoring and what people read: metrics.py (streaming confusion matrix -> per-class IoU) ->
scoring.py (a split through the one inference path; `segkit evaluate`) -> report.py
(metrics.json, per_class.md, confusion.png, overlays/) drawn by overlays.py.
"""
