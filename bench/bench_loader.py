"""Training images/s per DataLoader worker at 512² crops, for each family's training pipeline, and
the workers one GPU needs to be fed at a target rate (250 images/s: BENCHMARKS.md's training
target for one H100).

    python bench/bench_loader.py [--images 200] [--size 768] [--batches 20] [--target 250]
    python bench/bench_loader.py --smoke     # 96 px images, 64 px crops, a few batches

The pipeline is the trainer's (segkit.data.loaders.build_train_loader): JPEG decode, class
selection, rescale + pad + crop (cat_max_ratio retries, as `others: background` turns it on) + flip,
uint8 collate, and for MaskFormer/Mask2Former the per-image targets made in the collate
(segkit.models.maskformer.SemanticTargets). Images are generated shapes saved as `--size`² JPEGs
with PNG masks in a temporary folder, read back through `data.format: folder`, so decoding is real.

One worker is timed (its own process, as in training), after the batches it prefetched while
starting are drained. Workers scale about linearly until the cores or memory bandwidth run out,
so workers needed = ceil(target / rate per worker); the main process and the GPU's own host work
need cores besides. The figure depends on the CPU: it names its cores and torch's capability.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch
from common import parser, record, table  # noqa: I001

FAMILIES = ("segformer", "maskformer", "mask2former", "vit")


def write_folder(root: Path, images: int, size: int) -> None:
    """`images` generated scenes as JPEG + PNG mask pairs in the folder layout."""
    from segkit.data.sources.synthetic import make_synthetic

    rows = make_synthetic(images, size, seed=0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
    for k, row in enumerate(rows):
        split = "val" if k < 2 else "train"
        row["image"].convert("RGB").save(root / "images" / split / f"{k}.jpg", quality=90)
        row["annotation"].save(root / "annotations" / split / f"{k}.png")


def epochs(loader, sampler):  # noqa: ANN001, ANN201
    """Batches over as many epochs as asked for, as the trainer runs them (persistent workers)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def rate_per_worker(root: Path, family: str, crop: int, batches: int) -> float:
    from segkit.config.recipe import recipe_from_dict
    from segkit.data import build_data
    from segkit.data.loaders import build_train_loader
    from segkit.models.maskformer import SemanticTargets
    from segkit.models.registry import FAMILIES as REGISTRY

    recipe = recipe_from_dict({
        "data": {"format": "folder", "path": str(root), "val_fraction": 0.0,
                 "class_names": ["background", "circle", "square", "triangle", "stripe"]},
        "classes": {"select": ["circle", "square", "triangle"], "others": "background"},
        "augment": {"crop_size": crop, "scale": [0.5, 2.0]},
        "model": {"family": family, "size": "tiny"},
        "train": {"batch_size": 8, "num_workers": 1},
    })
    data = build_data(recipe, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    targets = SemanticTargets(data.labels.num_classes) if REGISTRY[family].query_based else None
    loader, _, sampler = build_train_loader(data, recipe.train, targets=targets)
    it = epochs(loader, sampler)
    for _ in range(loader.prefetch_factor):  # made while the worker started: not throughput
        next(it)
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * recipe.train.batch_size / (time.perf_counter() - started)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200, help="generated training images (the epoch cycles over them)")
    p.add_argument("--size", type=int, default=768, help="side of the generated JPEGs")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batches", type=int, default=20, help="timed batches of 8")
    p.add_argument("--target", type=float, default=250.0, help="images/s one GPU consumes")
    args = p.parse_args()
    images, size, crop, batches = (12, 96, 64, 2) if args.smoke else (args.images, args.size, args.crop, args.batches)
    cpu = f"{torch.backends.cpu.get_cpu_capability()}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), images, size)
        for family in FAMILIES:
            rate = rate_per_worker(Path(tmp), family, crop, batches)
            need = math.ceil(args.target / rate)
            record(args.jsonl, "loader_per_worker", smoke=args.smoke, family=family, crop=crop, image_size=size,
                   images_per_s_per_worker=rate, target=args.target, workers_needed=need, cpu_capability=cpu)
            rows.append([family, f"{crop}²", f"{rate:.1f}", str(need)])
    print(f"CPU capability {cpu}; images {size}² JPEG; target {args.target:g} images/s per GPU")
    print(table(["family", "crop", "images/s per worker", f"workers for {args.target:g}/s"], rows))


if __name__ == "__main__":
    main()
