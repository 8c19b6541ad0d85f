"""Time segkit's ConfusionMatrix against a boolean-mask NumPy loop, evaluate's mean_iou formula and
segkit's own metric through `evaluate` (segkit.evaluation.metrics.EVALUATE_MODULE).

    python bench/bench_metrics.py [--masks 100] [--size 512] [--classes 150]

Prints the best of a few repeats per implementation and ratios from this one run (machines
differ; only the ratios travel). The default workload is ADE20K-sized: 100 masks of 512², 150
classes, 5% ignored.

ConfusionMatrix runs at torch's default thread count and at one thread. On a small shared machine
the two can differ by 10x or more: when other processes hold the cores, torch's intra-op threads
wait on each other, while one thread just runs.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from common import parser, record  # noqa: I001  (bench/ is on the path)

from segkit.evaluation.metrics import ConfusionMatrix

IGNORE = 255


def make_masks(n: int, size: int, classes: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Targets with 5% ignored pixels; predictions right on about 70% of pixels."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n):
        t = rng.integers(0, classes, size=(size, size), dtype=np.uint8)
        p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, classes, size=t.shape)).astype(np.int64)
        t[rng.random(t.shape) < 0.05] = IGNORE
        preds.append(p)
        targets.append(t)
    return preds, targets


def boolean_mask_numpy(preds, targets, classes: int) -> np.ndarray:
    """The usual hand-written metric: per class, intersection and union from boolean masks."""
    inter = np.zeros(classes, np.int64)
    union = np.zeros(classes, np.int64)
    for p, t in zip(preds, targets):
        valid = t != IGNORE
        for k in range(classes):
            pk, tk = (p == k) & valid, t == k
            inter[k] += np.count_nonzero(pk & tk)
            union[k] += np.count_nonzero(pk | tk)
    return inter, union


def segkit_cm(preds, targets, classes: int) -> torch.Tensor:
    cm = ConfusionMatrix(classes, IGNORE)
    for p, t in zip(preds, targets):
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    return cm.matrix


def timed(fn, *args, repeats: int = 1):
    """Best wall time of `repeats` calls: the least disturbed by other work on the machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def mean_iou_formula(preds, targets, classes: int) -> np.ndarray:
    """evaluate's `mean_iou` (the Hub script, evaluate-metric/mean_iou), reimplemented for this
    comparison only: `evaluate.load("mean_iou")` needs the Hub, which is not reachable offline.
    Per image: drop ignored pixels, then histograms of the intersection, the prediction and the
    truth; IoU = intersection / union summed over images (NaN for a class with no pixels)."""
    inter = np.zeros(classes)
    union = np.zeros(classes)
    for p, t in zip(preds, targets):
        valid = t != IGNORE
        p, t = p[valid], t[valid]
        hist = lambda x: np.histogram(x, bins=classes, range=(0, classes - 1))[0]  # noqa: E731
        i = hist(p[p == t])
        inter += i
        union += hist(p) + hist(t) - i
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def segkit_through_evaluate(preds, targets, classes: int) -> dict:
    import evaluate  # imported late: it pulls in transformers.pipelines, several seconds

    from segkit.evaluation.metrics import EVALUATE_MODULE

    metric = evaluate.load(EVALUATE_MODULE, num_labels=classes, ignore_index=IGNORE)
    for p, t in zip(preds, targets):
        metric.add_batch(predictions=[p], references=[t])
    return metric.compute()


def try_evaluate(preds, targets, classes: int) -> float | None:
    """evaluate's mean_iou, if it can be loaded here (it needs the Hub, so usually not)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import evaluate  # imported late: it pulls in transformers.pipelines, several seconds

        metric = evaluate.load("mean_iou")
    except Exception as e:  # noqa: BLE001 - any failure to load just skips this row
        print(f"evaluate mean_iou: not loadable offline ({type(e).__name__}: {str(e).splitlines()[0]})")
        return None
    seconds, _ = timed(
        metric.compute, predictions=preds, references=targets, num_labels=classes,
        ignore_index=IGNORE, reduce_labels=False,
    )
    return seconds


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classes", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-evaluate", action="store_true", help="skip the (slow to import) evaluate rows")
    ap.add_argument("--evaluate", action="store_true", help="keep the evaluate rows in --smoke")
    args = ap.parse_args()
    if args.smoke:
        args.masks, args.size, args.classes, args.repeats, args.no_evaluate = 3, 64, 5, 1, not args.evaluate
    c = args.classes
    preds, targets = make_masks(args.masks, args.size, c)
    print(f"{args.masks} masks of {args.size}², {c} classes, ignore {IGNORE}; best of {args.repeats}")

    r = args.repeats
    threads = torch.get_num_threads()
    segkit_cm(preds[:2], targets[:2], c)  # warm-up: first calls pay for allocator and kernels
    t_cm, matrix = timed(segkit_cm, preds, targets, c, repeats=r)
    torch.set_num_threads(1)
    t_cm1, _ = timed(segkit_cm, preds, targets, c, repeats=r)
    torch.set_num_threads(threads)
    t_np, (inter, union) = timed(boolean_mask_numpy, preds, targets, c, repeats=r)

    m = matrix.numpy()
    tp = np.diag(m)
    assert np.array_equal(tp, inter), "intersections differ"
    assert np.array_equal(m.sum(0) + m.sum(1) - tp, union), "unions differ"

    t_formula, iou = timed(mean_iou_formula, preds, targets, c, repeats=r)
    assert np.allclose(iou, tp / (m.sum(0) + m.sum(1) - tp), equal_nan=True), "mean_iou formula differs"

    rows = [
        (f"segkit CM, {threads} threads", t_cm),
        ("segkit CM, 1 thread", t_cm1),
        ("NumPy boolean masks", t_np),
        ("evaluate mean_iou formula", t_formula),
    ]
    if not args.no_evaluate:
        segkit_through_evaluate(preds[:1], targets[:1], c)  # the load (copying the script) is not timed twice
        t_through, result = timed(segkit_through_evaluate, preds, targets, c, repeats=r)
        ours = [result["per_class"][str(k)]["iou"] for k in range(c)]
        assert np.allclose([np.nan if v is None else v for v in ours], iou, equal_nan=True), "evaluate module differs"
        rows.append(("segkit through evaluate", t_through))
    t_ev = None if args.no_evaluate else try_evaluate(preds, targets, c)
    if t_ev is not None:
        rows.append(("evaluate mean_iou", t_ev))
    best = min(t_cm, t_cm1)
    for name, t in rows:
        print(f"{name:24s} {t * 1000:8.0f} ms   {t / best:6.1f}x the fastest segkit run")
        record(args.jsonl, "metrics", smoke=args.smoke, method=name, masks=args.masks, size=args.size, classes=c,
               seconds=t, ratio_to_fastest=t / best)


if __name__ == "__main__":
    main()
