"""The fine-tuning race: segkit against the Hugging Face example's way, from one trained checkpoint.

    python bench/race_finetune.py [--minutes 2,5,10] [--checkpoint RUN]   # about 1 h 40 min on 2 cores
    python bench/race_finetune.py --smoke                                  # a minute: tiny models

1. The checkpoint: CamVid with all 11 classes, trained once by recipes/camvid-11class-segformer.yaml
   into bench/out/race-finetune/c11 (reused while its model/ exists; or --checkpoint RUN).
2. For each class subset (car, pedestrian, bicyclist, sign_symbol; then pole, fence, sign_symbol)
   and each budget in minutes, both sides start from that checkpoint:
   - baseline (bench/baseline_trainer.py --checkpoint): `from_pretrained(...,
     ignore_mismatched_sizes=True)` gives a new random head, plain cross-entropy, its own lr (6e-5,
     the example's default), linear decay. Its schedule length comes from a short probe of its rate;
     training stops at the budget (its scoring is not counted against it).
   - segkit: the four-class recipe's data and crops with `train.time_budget` = the budget and the
     TrainConfig defaults for fine-tuning (lr 6e-5, backbone lr x 0.1, no warmup steps, head rows
     carried from the checkpoint, rare-class defaults, no calibration). Its budget includes its
     evaluations and its final report, so it trains for less than the baseline does.
3. Both models are scored by bench/race.py's scorer (not segkit's) on all 233 test frames: per-class
   IoU, strict mIoU, the mean of the chosen classes, and for each class the share of pixels it is
   predicted on against the share it covers. One table for everything.

Run it with nothing else on the machine.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from baseline_trainer import CHOSEN
from common import OUT, ROOT, SHARED, machine, parser, record, table  # noqa: I001
from race import measured, score

SUBSETS = {"4 rare": CHOSEN, "thin": ["pole", "fence", "sign_symbol"]}
C11 = ROOT / "recipes" / "camvid-11class-segformer.yaml"
RECIPE = ROOT / "recipes" / "camvid-4class-segformer.yaml"
SMOKE = ["classes.max_samples=16", "classes.max_eval_samples=4", "augment.crop_size=64"]
"""Seconds, not minutes: a few images at tiny crops (and a tiny 11-class checkpoint)."""


def segkit_cmd(recipe: Path, out: Path, sets: list[str], smoke: bool) -> list[str]:
    sets = ["train.tracker=none", "train.num_overlays=0", *sets, *(SMOKE if smoke else [])]
    return [sys.executable, "-m", "segkit.cli", "train", str(recipe), "--overwrite", "--output-dir", str(out),
            *[a for s in sets for a in ("--set", s)]]


def checkpoint(args) -> Path:  # noqa: ANN001
    """The 11-class model folder, trained once and cached."""
    if args.checkpoint:
        return Path(args.checkpoint) / "model"
    run = args.out / ("c11-smoke" if args.smoke else "c11")
    if not (run / "model" / "config.json").is_file():
        print("training the 11-class checkpoint (once) ...", flush=True)
        sets = ["model.size=tiny", "train.max_steps=4", "train.eval_every=4"] if args.smoke else []
        measured(segkit_cmd(C11, run, sets, args.smoke), args.out / "c11.log")
    return run / "model"


def baseline_rate(args, model: Path, chosen: list[str]) -> float:  # noqa: ANN001
    """The baseline's steady images/s, from a short run of it (its schedule needs a length)."""
    out = args.out / "baseline-probe"
    extra = ["--smoke"] if args.smoke else []
    measured([sys.executable, "bench/baseline_trainer.py", "--out", str(out), "--checkpoint", str(model),
              "--classes", ",".join(chosen), "--max-steps", "4" if args.smoke else "40", *extra], args.out / "probe.log")
    return json.loads((out / "summary.json").read_text())["images_per_s"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", default="2,5,10", help="budgets, comma-separated")
    p.add_argument("--checkpoint", default=None, help="a trained 11-class run folder to start from")
    p.add_argument("--out", type=Path, default=OUT / "race-finetune")
    args = p.parse_args()
    data = SHARED / "camvid"
    if not data.is_dir():
        raise SystemExit(f"{data} is missing: the race runs on the shared CamVid copy.")
    args.out.mkdir(parents=True, exist_ok=True)
    budgets = [0.15, 0.25] if args.smoke else [float(m) for m in args.minutes.split(",")]
    limit = 4 if args.smoke else None
    model = checkpoint(args)
    from transformers import SegformerForSemanticSegmentation

    rows = []
    for subset, chosen in SUBSETS.items():
        rate = baseline_rate(args, model, chosen)
        for minutes in budgets:
            seconds = minutes * 60
            tag = f"{subset.replace(' ', '_')}-{minutes:g}m"
            base_out = args.out / f"baseline-{tag}"
            steps = max(1, math.floor(seconds * rate / 8))  # the schedule spans the budget at the probed rate
            measured([sys.executable, "bench/baseline_trainer.py", "--out", str(base_out), "--checkpoint", str(model),
                      "--classes", ",".join(chosen), "--max-steps", str(steps), "--max-seconds", str(seconds),
                      *(["--smoke"] if args.smoke else [])], args.out / f"baseline-{tag}.log")
            seg_out = args.out / f"segkit-{tag}"
            sets = [f"model.checkpoint={model}", "model.size=null", f"train.time_budget={seconds:g}s",
                    f"classes.select=[{','.join(chosen)}]", "train.lr=6e-5", "train.backbone_lr_scale=0.1",
                    "train.warmup_steps=0", "train.eval_every=0"]  # TrainConfig's fine-tuning defaults
            measured(segkit_cmd(RECIPE, seg_out, sets, args.smoke), args.out / f"segkit-{tag}.log")
            seg = json.loads((seg_out / "metrics.json").read_text())
            base = json.loads((base_out / "summary.json").read_text())
            for system, folder, wall in (("baseline (HF example way)", base_out / "model", base["wall_s"]),
                                         ("segkit (defaults)", seg_out / "model", seg["elapsed_s"])):
                r = score(SegformerForSemanticSegmentation.from_pretrained(folder), data, limit, chosen)
                ious = ", ".join(f"{n} {100 * r[n]:.1f}" for n in chosen)
                shares = ", ".join(f"{n} {100 * r[f'{n}_predicted']:.1f}/{100 * r[f'{n}_covers']:.1f}" for n in chosen)
                rows.append([subset, f"{minutes:g}", system, ious, f"{100 * r['strict_mIoU']:.1f}",
                             f"{100 * r['class_mean']:.1f}", shares, f"{wall:.0f}"])
                record(args.jsonl, "race_finetune", system=system, subset=subset, classes=chosen, minutes=minutes,
                       smoke=args.smoke, wall_s=wall, test=r,
                       calibration=seg.get("calibration") if system.startswith("segkit") else None)
    print(table(["subset", "min", "system", "test IoU %", "strict mIoU", "mean of chosen",
                 "predicted on / covers (% of px)", "wall s"], rows))
    print(f"measured on {machine()}")


if __name__ == "__main__":
    main()
