"""The data pipeline against the raw decode rate of the same files, in one run.

    python bench/bench_data.py [--batches 40] [--workers 0 1 2]

Raw decode: PIL reads each CamVid training image and its mask, nothing else, in this process.
Pipeline: segkit's training loader for recipes/camvid-4class-segformer.yaml (decode, class
selection, rescale + pad + cat_max_ratio crop + flip + normalise, collate), with 0, 1 and 2
DataLoader workers. The pipeline's share of the ceiling is its rate over the raw decode rate.
"""

from __future__ import annotations

import time

import numpy as np
from common import ROOT, SHARED, parser, record, table  # noqa: I001
from PIL import Image


def raw_rate(files: list, masks: list) -> float:
    started = time.perf_counter()
    for f, m in zip(files, masks):
        np.asarray(Image.open(f).convert("RGB"))
        np.asarray(Image.open(m))
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    from segkit.config.recipe import load_recipe
    from segkit.data import build_data
    from segkit.data.loaders import build_train_loader

    batches = 3 if args.smoke else args.batches
    camvid = SHARED / "camvid"
    files = sorted((camvid / "train").glob("*.png"))[: batches * 8]
    if not files:
        raise SystemExit("the shared CamVid copy is missing")
    raw = raw_rate(files, [camvid / "trainannot" / f.name for f in files])
    record(args.jsonl, "data_raw_decode", smoke=args.smoke, images_per_s=raw)
    rows = [["raw decode (PIL, image + mask)", f"{raw:.1f}", "100%"]]
    recipe = load_recipe(ROOT / "recipes" / "camvid-4class-segformer.yaml", [f"data.path={camvid}"])
    data = build_data(recipe, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for workers in args.workers:
        recipe.train.num_workers = workers
        loader, items, sampler = build_train_loader(data, recipe.train)
        for obj in (items, sampler):
            obj.set_epoch(0)
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        started = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batches * recipe.train.batch_size / (time.perf_counter() - started)
        record(args.jsonl, "data_pipeline", smoke=args.smoke, workers=workers, images_per_s=rate, share_of_raw=rate / raw)
        rows.append([f"segkit training loader, {workers} workers", f"{rate:.1f}", f"{100 * rate / raw:.0f}%"])
    print(table(["", "images/s", "of raw decode"], rows))


if __name__ == "__main__":
    main()
