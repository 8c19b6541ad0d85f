"""segkit against the Hugging Face Trainer baseline, side by side, on the same minutes of CPU.

    python bench/race.py [--epochs 10]      # about 25 minutes on 2 cores; --smoke: about a minute

1. The baseline (bench/baseline_trainer.py) trains SegFormer-B0 from random weights on CamVid's
   four-class subset for 10 epochs at 256 px crops, batch 8; its training wall time is the budget.
2. segkit runs a short probe of the shipped recipe (recipes/camvid-4class-segformer.yaml, same
   model, crops and batch) to measure its step rate, then trains for as many steps as fit in the
   baseline's minutes. Evaluation during training is left out of both (segkit evaluates once at the
   end, like the baseline is scored once).
3. Both models are scored here, by one scorer that is not segkit's, on all 233 CamVid test frames
   at full resolution: per-class IoU, strict mIoU, and the mean of the four class IoUs.

Run it with nothing else on the machine: two trainings at once slow each other several times over.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from baseline_trainer import CHOSEN, MEAN, STD, lookup
from common import OUT, ROOT, SHARED, machine, parser, record, table  # noqa: I001
from PIL import Image

RECIPE = ROOT / "recipes" / "camvid-4class-segformer.yaml"
PEAK = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); " \
       "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(code)"


def measured(cmd: list[str], log: Path) -> float:
    """Run `cmd` (its output to `log`); the peak RSS in MB of its largest process."""
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-c", PEAK, *cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return float(log.read_text().rsplit("PEAK_RSS_MB", 1)[1].split()[0])


def segkit_log(run: Path) -> tuple[float, float, int]:
    """(training wall seconds, steady images/s, steps) from a run's train_log.jsonl."""
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    start = next(r["time"] for r in records if r.get("event") == "start")
    end = next(r for r in records if r.get("event") == "end")
    logged = [r for r in records if "loss" in r]
    if len(logged) < 3:  # a run too short to leave a start-up out of
        return end["time"] - start, 8 * end["step"] / (end["time"] - start), end["step"]
    first = logged[len(logged) // 10]  # the first 10% left out, as for the baseline
    rate = 8 * (logged[-1]["step"] - first["step"]) / (logged[-1]["time"] - first["time"])
    return end["time"] - start, rate, end["step"]


@torch.no_grad()
def score(model: torch.nn.Module, data: Path, limit: int | None, chosen: list[str] = CHOSEN) -> dict[str, float]:
    """Per-class IoU on whole test frames: logits upsampled to the label, argmax, one confusion
    matrix; and each class's share of the scored pixels it is predicted on (`NAME_predicted`) and
    covers (`NAME_covers`)."""
    lut, c = lookup(chosen), len(chosen) + 1
    matrix = np.zeros((c, c), dtype=np.int64)
    model.eval()
    for path in sorted((data / "test").glob("*.png"))[:limit]:
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(((image - MEAN) / STD).transpose(2, 0, 1)).float()[None]
        truth = lut[np.asarray(Image.open(data / "testannot" / path.name))]
        logits = torch.nn.functional.interpolate(model(pixel_values=x).logits, size=truth.shape, mode="bilinear",
                                                 align_corners=False)
        pred = logits.argmax(1)[0].numpy()
        keep = truth != 255
        matrix += np.bincount(truth[keep] * c + pred[keep], minlength=c * c).reshape(c, c)
    iou = np.diag(matrix) / np.maximum(matrix.sum(0) + matrix.sum(1) - np.diag(matrix), 1)
    names, total = ["background", *chosen], max(1, matrix.sum())
    shares = {f"{n}_{kind}": float(v / total) for kind, axis in (("predicted", 0), ("covers", 1))
              for n, v in zip(names, matrix.sum(axis))}
    return {**{n: float(v) for n, v in zip(names, iou)}, "strict_mIoU": float(iou.mean()),
            "class_mean": float(iou[1:].mean()), **shares}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--out", type=Path, default=OUT / "race")
    args = p.parse_args()
    data = SHARED / "camvid"
    if not data.is_dir():
        raise SystemExit(f"{data} is missing: the race runs on the shared CamVid copy.")
    args.out.mkdir(parents=True, exist_ok=True)
    smoke = ["--smoke"] if args.smoke else []
    limit = 6 if args.smoke else None
    segkit = [sys.executable, "-m", "segkit.cli", "train", str(RECIPE), "--overwrite", "--set", "train.tracker=none",
              "--set", "train.num_overlays=0"]
    if args.smoke:  # seconds, not minutes: a tiny model on a few images
        segkit += ["--set", "model.size=tiny", "--set", "classes.max_samples=16", "--set", "classes.max_eval_samples=4",
                   "--set", "augment.crop_size=64"]

    print("1/3 baseline (transformers.Trainer) ...", flush=True)
    base_peak = measured([sys.executable, "bench/baseline_trainer.py", "--out", str(args.out / "baseline"),
                          "--epochs", str(args.epochs), *smoke], args.out / "baseline.log")
    base = json.loads((args.out / "baseline" / "summary.json").read_text())

    print("2/3 segkit: probe the step rate, then train for the baseline's minutes ...", flush=True)
    probe_steps = 12 if args.smoke else 60
    measured(segkit + ["--output-dir", str(args.out / "probe"), "--set", f"train.max_steps={probe_steps}",
                       "--set", f"train.eval_every={probe_steps}", "--set", "classes.max_eval_samples=2",
                       "--set", "train.log_every=5"], args.out / "probe.log")
    probe_wall, probe_rate, _ = segkit_log(args.out / "probe")
    steps = max(1, math.floor(base["wall_s"] * probe_rate / 8))
    seg_peak = measured(segkit + ["--output-dir", str(args.out / "segkit"), "--set", f"train.max_steps={steps}",
                                  "--set", f"train.eval_every={steps}"], args.out / "segkit.log")
    seg_wall, seg_rate, seg_steps = segkit_log(args.out / "segkit")

    print("3/3 scoring both on the CamVid test frames ...", flush=True)
    from transformers import SegformerForSemanticSegmentation

    started = time.perf_counter()
    rows, results = [], {}
    for name, folder in (("baseline (HF Trainer)", args.out / "baseline" / "model"),
                         ("segkit (recipe defaults)", args.out / "segkit" / "model")):
        results[name] = score(SegformerForSemanticSegmentation.from_pretrained(folder), data, limit)
    figures = {"baseline (HF Trainer)": (base["images_per_s"], base["wall_s"], base_peak, base["steps"]),
               "segkit (recipe defaults)": (seg_rate, seg_wall, seg_peak, seg_steps)}
    for name, r in results.items():
        rate, wall, peak, n = figures[name]
        painted = ", ".join(f"{c} {r[f'{c}_predicted'] / max(r[f'{c}_covers'], 1e-12):.1f}x" for c in CHOSEN)
        rows.append([name, *(f"{100 * r[c]:.1f}" for c in CHOSEN), f"{100 * r['strict_mIoU']:.1f}",
                     f"{100 * r['class_mean']:.1f}", painted, f"{rate:.2f}", f"{wall / 60:.1f}", f"{peak:.0f}", n])
        record(args.jsonl, "race", system=name, smoke=args.smoke, steps=n, images_per_s=rate, wall_s=wall,
               peak_rss_mb=peak, test=r)
    print(table(["", *CHOSEN, "strict mIoU", "mean of 4", "painted on / covers", "train img/s", "wall min",
                 "peak RSS MB", "steps"], rows))
    print(f"segkit/baseline training speed: {seg_rate / base['images_per_s']:.2f}x on {machine()} "
          f"(scoring took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
