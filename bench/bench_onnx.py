"""Prediction on CPU through PyTorch (fp32, bf16) and onnxruntime (fp32, int8): same model, same frames.

    python bench/bench_onnx.py [--family segformer --size b0] [--frames 40] [--side 512]

The model is built from random weights (speed does not depend on them), exported with
`segkit.hub.onnx.export_onnx` (int8 = onnxruntime dynamic quantisation, kept here even when it
fails the parity check, to be measured) and every runtime predicts the same synthetic frames
through segkit's one inference path (`segment_images`). Each runtime runs in its own process, so
its peak memory is its own. Mask agreement is against PyTorch fp32. Figures: not yet measured alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import parser, peak_rss_mb, record, table  # noqa: I001

RUNTIMES = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")


def frames(count: int, side: int) -> list:
    from segkit.data import make_synthetic

    return [r["image"].convert("RGB") for r in make_synthetic(count, side, seed=3, split="bench-onnx")]


def worker(runtime: str, folder: Path, count: int, side: int, out: Path) -> None:
    """One runtime in this process: time `segment_images` over the frames, save the masks."""
    from contextlib import nullcontext

    import torch

    from segkit.infer.onnx_model import OnnxSegModel
    from segkit.infer.segment import segment_images
    from segkit.models.build import load_model

    file = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}.get(runtime)
    model = OnnxSegModel(folder / file) if file else load_model(folder)
    images = frames(count, side)
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if runtime == "torch-bf16" else nullcontext
    with context(), torch.inference_mode():
        segment_images(model, images[:1])  # warm-up: first-call allocations and kernel choice
        start = time.perf_counter()
        masks = segment_images(model, images)
        seconds = time.perf_counter() - start
    np.savez_compressed(out, *masks)
    print(json.dumps({"images_per_s": len(images) / seconds, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--family", default="segformer")
    p.add_argument("--size", default="b0")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--worker", choices=RUNTIMES, help=argparse_hidden())
    p.add_argument("--dir", type=Path, help=argparse_hidden())
    p.add_argument("--out", type=Path, help=argparse_hidden())
    args = p.parse_args()
    size, count, side = ("tiny", 3, 96) if args.smoke else (args.size, args.frames, args.side)
    if args.worker:
        return worker(args.worker, args.dir, count, side, args.out)

    from segkit.config.sections import InputSpec, ModelConfig
    from segkit.hub import onnx as onnx_export
    from segkit.labels import LabelSet
    from segkit.models.build import build_model

    labels = LabelSet(("background", "circle", "square", "triangle"), background=0)
    model = build_model(ModelConfig(family=args.family, size=size), labels,
                        spec=InputSpec("none", None, (side, side))).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model.save_pretrained(folder)
        report = onnx_export.export_onnx(model, folder)
        onnx_export._quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")  # measured even if refused
        onnx_export._write_metadata(folder / "model.int8.onnx", json.loads(_meta(folder / "model.onnx")))
        results, masks = [], {}
        for runtime in RUNTIMES:
            out = folder / f"{runtime}.npz"
            cmd = [sys.executable, __file__, "--worker", runtime, "--dir", str(folder), "--out", str(out),
                   "--size", size, "--frames", str(count), "--side", str(side)] + (["--smoke"] if args.smoke else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            with np.load(out) as z:
                masks[runtime] = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
            ref = masks["torch-fp32"]
            agree = sum((a == b).sum() for a, b in zip(ref, masks[runtime])) / sum(a.size for a in ref)
            results.append(record(args.jsonl, "onnx_predict", runtime=runtime, family=args.family, size=size,
                                  frames=count, side=side, agreement_vs_torch_fp32=float(agree),
                                  export_parity=report["parity"]["fp32"]["agreement"], **figures))
    print(table(["runtime", "img/s", "peak RSS MB", "masks = torch fp32"],
                [[r["runtime"], f"{r['images_per_s']:.2f}", f"{r['peak_rss_mb']:.0f}",
                  f"{r['agreement_vs_torch_fp32']:.4%}"] for r in results]))


def _meta(path: Path) -> str:
    import onnx

    from segkit.infer.onnx_model import META_KEY

    return next(p.value for p in onnx.load(str(path)).metadata_props if p.key == META_KEY)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
