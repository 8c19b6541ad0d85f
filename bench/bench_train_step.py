"""What a training step costs, per family, size, resolution and precision: images/s and peak RSS.

    python bench/bench_train_step.py [--families segformer maskformer mask2former vit]
                                     [--sizes tiny real] [--res 256 512] [--precision fp32 bf16]

Random weights (the cost does not depend on them), synthetic batches of 2 (no data loading),
segkit's models and losses, AdamW. "real" is each family's size in the shipped recipes. Every
configuration runs in its own process, so each peak RSS is its own; a few warm-up steps are not
timed. On a GPU the same script measures the GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from common import ROOT, parser, peak_rss_mb, record, table  # noqa: I001

REAL = {"segformer": "b0", "maskformer": "swin-base", "mask2former": "swin-base", "vit": "small"}
"""The sizes the shipped recipes train (MaskFormer/Mask2Former: the ADE20K Swin-B checkpoints)."""


def one(family: str, size: str, res: int, precision: str, batch: int, steps: int) -> dict:
    """Time `steps` training steps of one configuration in this process."""
    from segkit.config.sections import ModelConfig
    from segkit.infer.scores import upsample_scores
    from segkit.labels import LabelSet
    from segkit.models import build_model
    from segkit.train.losses import CrossEntropy

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    labels = LabelSet(("background", "a", "b", "c", "d"), background=0)
    model = build_model(ModelConfig(family=family, size=size), labels).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = CrossEntropy()
    side = res - res % model.size_divisor if model.strict_size else res  # a patch model takes its grid
    x = torch.randn(batch, 3, side, side, device=device)
    y = torch.randint(0, 5, (batch, side, side), device=device)
    y[:, : side // 8] = 255

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x, labels=y if model.has_own_loss else None)
            loss = out.loss if model.has_own_loss else loss_fn(upsample_scores(out.scores, y.shape[-2:]).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    return {"family": family, "size": size, "res": side, "precision": precision, "batch": batch,
            "s_per_step": seconds, "images_per_s": batch / seconds, "peak_rss_mb": peak_rss_mb(),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "torch_threads": torch.get_num_threads()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(REAL))
    p.add_argument("--sizes", nargs="+", default=["tiny", "real"])
    p.add_argument("--res", type=int, nargs="+", default=[256, 512])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--one", nargs=4, metavar=("FAMILY", "SIZE", "RES", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        family, size, res, precision = args.one
        print("RESULT " + json.dumps(one(family, size, int(res), precision, args.batch, args.steps)))
        return
    if args.smoke:
        args.families, args.sizes, args.res, args.precision, args.steps = list(REAL), ["tiny"], [64], ["fp32"], 1
    rows = []
    for family in args.families:
        for size in args.sizes:
            for res in args.res:
                for precision in args.precision:
                    name = REAL[family] if size == "real" else size
                    done = subprocess.run([sys.executable, __file__, "--one", family, name, str(res), precision,
                                           "--batch", str(args.batch), "--steps", str(args.steps)],
                                          capture_output=True, text=True, cwd=ROOT)
                    line = next((s for s in done.stdout.splitlines() if s.startswith("RESULT ")), None)
                    if line is None:
                        raise SystemExit(f"{family} {name} {res} {precision} failed:\n{done.stderr[-2000:]}")
                    r = json.loads(line[7:])
                    record(args.jsonl, "train_step", smoke=args.smoke, **r)
                    rows.append([family, name, f"{r['params_m']:.1f}", r["res"], precision, f"{r['s_per_step']:.2f}",
                                 f"{r['images_per_s']:.2f}", f"{r['peak_rss_mb']:.0f}"])
                    print(table(["family", "size", "M params", "res", "precision", "s/step", "img/s", "peak RSS MB"],
                                rows[-1:]).splitlines()[-1], flush=True)
    print(table(["family", "size", "M params", "res", "precision", "s/step", "img/s", "peak RSS MB"], rows))


if __name__ == "__main__":
    main()
