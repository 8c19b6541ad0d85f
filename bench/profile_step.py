"""Where a segkit training step's time goes on this machine: waiting for data, forward, loss,
backward, optimizer; in fp32 and in bf16 autocast.

    python bench/profile_step.py [--steps 30] [--workers 2]

The real pieces of `segkit train recipes/camvid-4class-segformer.yaml`: its data loader (decode,
class selection, augmentation in workers), SegFormer-B0 from random weights, the recipe's
class-weighted loss, AdamW. On a CPU every op is synchronous, so wall-clock timers around each
phase add up to the step.
"""

from __future__ import annotations

import time

import torch
from common import ROOT, SHARED, parser, record, table  # noqa: I001

PHASES = ("data", "forward", "loss", "backward", "optimizer")


def profile(precision: str, steps: int, workers: int, smoke: bool) -> dict[str, float]:
    from segkit.config.recipe import load_recipe
    from segkit.config.sections import InputSpec
    from segkit.data import build_data
    from segkit.data.loaders import build_train_loader
    from segkit.data.pixels import DeviceNormalise
    from segkit.infer.scores import upsample_scores
    from segkit.models import build_model
    from segkit.train.losses import build_loss
    from segkit.train.optim import build_optimizer

    sets = [f"data.path={SHARED / 'camvid'}", f"train.num_workers={workers}"]
    if smoke:
        sets += ["model.size=tiny", "classes.max_samples=16", "augment.crop_size=64"]
    recipe = load_recipe(ROOT / "recipes" / "camvid-4class-segformer.yaml", sets)
    torch.manual_seed(0)
    model = build_model(recipe.model, _labels(recipe), recipe.loss, InputSpec.from_augment(recipe.augment)).train()
    data = build_data(recipe, model.image_mean, model.image_std)
    loss_fn = build_loss(recipe.loss, data.labels.num_classes, data.stats)
    optimizer = build_optimizer(model, recipe.train)
    loader, items, sampler = build_train_loader(data, recipe.train)
    normalise = DeviceNormalise(model.image_mean, model.image_std)  # the trainer's: uint8 batches

    def epochs():  # noqa: ANN202
        for epoch in range(10**6):
            items.set_epoch(epoch)
            sampler.set_epoch(epoch)
            yield from loader

    totals = dict.fromkeys(PHASES, 0.0)
    batches = epochs()
    for k in range(steps + 2):  # the first two steps warm up allocators and workers
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            scores = model(normalise(batch["pixel_values"])).scores
        t2 = time.perf_counter()
        loss = loss_fn(upsample_scores(scores, batch["labels"].shape[-2:]).float(), batch["labels"].long())
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if k >= 2:
            for phase, (a, b) in zip(PHASES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
                totals[phase] += (b - a) / steps
    return totals


def _labels(recipe):  # noqa: ANN001, ANN202
    from segkit.data import load_source, select_classes

    return select_classes(load_source(recipe.data), recipe.classes).labels


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    steps = 2 if args.smoke else args.steps
    rows = []
    for precision in ("fp32", "bf16"):
        t = profile(precision, steps, args.workers, args.smoke)
        total = sum(t.values())
        record(args.jsonl, "profile_step", smoke=args.smoke, precision=precision, seconds=t, total_s=total,
               images_per_s=8 / total, torch_threads=torch.get_num_threads())
        rows.append([precision, *(f"{1000 * t[ph]:.0f} ms ({100 * t[ph] / total:.0f}%)" for ph in PHASES),
                     f"{1000 * total:.0f} ms", f"{8 / total:.1f}"])
    model = "a tiny SegFormer, 64 px crops" if args.smoke else "SegFormer-B0, 256 px crops"
    print(f"{model}, batch 8, {torch.get_num_threads()} torch threads, {args.workers} workers")
    print(table(["", *PHASES, "step", "img/s"], rows))


if __name__ == "__main__":
    main()
