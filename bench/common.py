"""Shared by the bench/ scripts: where results go, what machine and versions produced them.

Every script prints a table and appends one JSON line per result to bench/out/results.jsonl
(or --jsonl), stamped with the date, the machine and the library versions, so a figure in
BENCHMARKS.md can be traced to its run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SHARED = ROOT.parent / "shared" / "data"
"""Real data beside the checkout (CamVid, SceneParse150 samples)."""

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("torch", "transformers", "datasets", "accelerate", "albumentations", "huggingface_hub", "numpy", "pillow")
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    from segkit.precision import cpu_features

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {cpu_features()}, {cores} cores"  # the features decide bf16's speed: every figure names them


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), in MB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="a few seconds at tiny size: checks the script works")
    p.add_argument("--jsonl", type=Path, default=OUT / "results.jsonl", help="where the JSON lines go")
    return p


def record(path: Path, bench: str, **fields: Any) -> dict[str, Any]:
    """Append one result line, stamped; returns it."""
    row = {"bench": bench, "date": dt.date.today().isoformat(), "machine": machine(), **fields,
           "versions": versions()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table, padded so it also reads in a terminal."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])
