"""Does a head built from the checkpoint's rows start where the checkpoint already is, and train
better than a random one on a short budget?

    python bench/bench_head_init.py --checkpoint runs/camvid-11class-segformer [--steps 150]

The checkpoint is a SegFormer trained on all 11 CamVid classes (recipes/camvid-11class-segformer.yaml).
The four-class recipe (car, pedestrian, bicyclist, sign_symbol; the other seven become
background) starts from it:

1. Step 0, on the val frames: the share of labelled pixels where the new model's class is the
   checkpoint's prediction grouped by the selection (a group's probability is the sum of its
   members'), and each class's IoU, for each construction of the new rows (fit, mean) and for a
   random head. The grouped checkpoint's own IoU is the target.
2. Then `--steps` optimizer steps of the recipe with the carried head and with a random one, same
   seed: test per-class IoU, strict mIoU, and the mean of the four class IoUs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from common import OUT, ROOT, parser, record, table  # noqa: I001

RECIPE = ROOT / "recipes" / "camvid-4class-segformer.yaml"


def step_zero(checkpoint: Path, limit: int | None) -> list[dict]:
    from segkit.config.recipe import load_recipe
    from segkit.config.sections import InputSpec
    from segkit.data import build_data, load_source, select_classes
    from segkit.evaluation.metrics import ConfusionMatrix, compute_metrics
    from segkit.infer.scores import eval_transform, group_by_shape
    from segkit.models import build_model, load_model
    from segkit.models.head_init import install

    recipe = load_recipe(RECIPE, [f"model.checkpoint={checkpoint}", "model.size=null"])
    source = load_source(recipe.data)
    selection = select_classes(source, recipe.classes)
    old = load_model(checkpoint)
    results = []
    for method in ("fit", "mean", "random"):
        torch.manual_seed(0)
        new = build_model(recipe.model, selection.labels, recipe.loss, InputSpec.from_augment(recipe.augment))
        data = build_data(recipe, new.image_mean, new.image_std, source=source, selection=selection,
                          eval_transform=eval_transform(new))
        carried, new.carried_head = new.carried_head, None
        rows = carried.rows_for(selection.labels)
        if method != "random":
            inputs = [eval_transform(new)(data.train.raw(i)[0]) for i in range(16)]
            install(new, carried, rows, (torch.stack([inputs[i] for i in g]) for g in group_by_shape(inputs)),
                    method=method)
        new.eval()
        agree = total = 0
        ours, grouped_cm = ConfusionMatrix(5), ConfusionMatrix(5)
        n = len(data.val) if limit is None else min(limit, len(data.val))
        with torch.no_grad():
            for i in range(n):
                item = data.val[i]
                x, truth = item["pixel_values"][None], item["labels"]
                probs = torch.nn.functional.interpolate(old(x).scores, size=truth.shape, mode="bilinear").softmax(1)
                grouped = torch.stack([probs[:, g].sum(1) for g in rows], 1).argmax(1)[0]
                pred = torch.nn.functional.interpolate(new(x).scores, size=truth.shape, mode="bilinear").argmax(1)[0]
                keep = truth != 255
                agree += int((pred[keep] == grouped[keep]).sum())
                total += int(keep.sum())
                ours.update(pred, truth)
                grouped_cm.update(grouped, truth)
        mine, target = compute_metrics(ours.matrix, selection.labels), compute_metrics(grouped_cm.matrix, selection.labels)
        results.append({"method": method, "agreement": agree / total,
                        "iou": {k: v["iou"] for k, v in mine["per_class"].items()},
                        "grouped_checkpoint_iou": {k: v["iou"] for k, v in target["per_class"].items()}})
    return results


def train(checkpoint: Path, head_init: str, steps: int, out: Path, extra: list[str]) -> dict:
    run = out / f"head-{head_init}"
    cmd = [sys.executable, "-m", "segkit.cli", "train", str(RECIPE), "--output-dir", str(run), "--overwrite",
           "--set", f"model.checkpoint={checkpoint}", "--set", "model.size=null", "--set", f"model.head_init={head_init}",
           "--set", f"train.max_steps={steps}", "--set", f"train.eval_every={steps}", "--set", "train.warmup_steps=10",
           "--set", "train.tracker=none", "--set", "train.num_overlays=0", "--set", "train.eval_at_start=false", *extra]
    with open(out / f"head-{head_init}.log", "w") as log:
        if subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"training failed: see {out / f'head-{head_init}.log'}")
    return json.loads((run / "metrics.json").read_text())


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "camvid-11class-segformer")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=OUT / "head_init")
    args = p.parse_args()
    from segkit.run_folder import RunFolder

    checkpoint = RunFolder.model_dir(args.checkpoint).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    limit, extra = (4, ["--set", "classes.max_samples=16", "--set", "classes.max_eval_samples=4"]) if args.smoke else (None, [])
    steps = 3 if args.smoke else args.steps

    zero = step_zero(checkpoint, limit)
    names = list(zero[0]["iou"])
    rows = [["grouped checkpoint (target)", "-", *(f"{100 * (zero[0]['grouped_checkpoint_iou'][n] or 0):.1f}" for n in names)]]
    for r in zero:
        rows.append([f"new head: {r['method']}", f"{100 * r['agreement']:.1f}",
                     *(f"{100 * (r['iou'][n] or 0):.1f}" for n in names)])
        record(args.jsonl, "head_init_step0", smoke=args.smoke, checkpoint=str(checkpoint), **r)
    print("Step 0 on val:\n" + table(["", "agrees with grouped checkpoint %", *(f"{n} IoU" for n in names)], rows))

    trained = []
    for head_init in ("checkpoint", "random"):
        m = train(checkpoint, head_init, steps, args.out, extra)
        fg = [n for n in m["per_class"] if n != "background"]
        mean4 = float(np.mean([m["per_class"][n]["iou"] or 0 for n in fg]))
        trained.append([f"head_init: {head_init}", *(f"{100 * (m['per_class'][n]['iou'] or 0):.1f}" for n in fg),
                        f"{100 * m['strict']['mIoU']:.1f}", f"{100 * mean4:.1f}"])
        record(args.jsonl, "head_init_trained", smoke=args.smoke, head_init=head_init, steps=steps,
               strict_mIoU=m["strict"]["mIoU"], class_mean=mean4, per_class={n: c["iou"] for n, c in m["per_class"].items()})
    print(f"\nAfter {steps} steps, on test:\n" + table(["", *fg, "strict mIoU", "mean of 4"], trained))


if __name__ == "__main__":
    main()
