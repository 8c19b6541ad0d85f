"""GPU figures: MaskFormer Swin-B at 512 px in bf16 (training with and without torch.compile, with
model FLOPs utilisation; inference), SegFormer-B0 inference, and the data pipeline with 16 workers.

    python bench/bench_gpu.py [--peak-tflops 989]       # on a machine with a CUDA GPU
    python bench/bench_gpu.py --smoke                   # tiny models on CPU: the script works

FLOPs of a training step are counted by torch.utils.flop_counter (forward + backward of the
network; the set loss's matching is not counted), and MFU is
model FLOPs per second over the card's dense bf16 peak (H100 and H200 SXM: 989 TFLOP/s). The
training rows time the model alone (synthetic batches on the device, no loader): the loader's
own ceiling is the last row. MaskFormer's Hungarian matching runs on the CPU inside the loss; the
share of a step it takes is printed with the training rows.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import ROOT, SHARED, parser, record, table  # noqa: I001


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, steps: int) -> float:  # noqa: ANN001
    for _ in range(2):
        fn()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - started) / steps


def maskformer(size: str, batch: int, res: int, compiled: bool, steps: int, device: str, peak: float) -> dict:
    from segkit.config.recipe import ModelConfig
    from segkit.labels import LabelSet
    from segkit.models import build_model

    torch.manual_seed(0)
    labels = LabelSet(("background", "windowpane", "person", "door", "table", "painting"), background=0)
    model = build_model(ModelConfig(family="maskformer", size=size), labels).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, res, res, device=device)
    y = torch.randint(0, 6, (batch, res, res), device=device)
    forward = torch.compile(model) if compiled else model
    matching = []
    matcher = model.model.criterion.matcher
    original = matcher.forward

    def clocked(*a, **k):  # noqa: ANN002, ANN003
        sync()
        t = time.perf_counter()
        out = original(*a, **k)
        matching.append(time.perf_counter() - t)
        return out

    matcher.forward = clocked

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = forward(x, labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Counted on a proxy step (the scores' mean as the loss): the set loss's Hungarian matching runs
    # under no_grad, which the counter's module tracker rejects, and costs few FLOPs anyway.
    with FlopCounterMode(display=False) as counter, torch.autocast(device, dtype=torch.bfloat16):
        forward(x).scores.float().mean().backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    matching.clear()
    seconds = timed(step, steps)
    timed_calls = matching[-steps:]  # the warm-up steps matched too
    match_share = sum(timed_calls) / len(timed_calls) / seconds if timed_calls else float("nan")
    train = {"images_per_s": batch / seconds, "tflop_per_step": flops / 1e12, "mfu": flops / seconds / (peak * 1e12),
             "matching_share": match_share,
             "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")}
    model.eval()
    with torch.no_grad():
        infer = timed(lambda: forward(x), steps)
    return {**train, "inference_images_per_s": batch / infer}


def segformer_inference(size: str, batch: int, res: int, steps: int, device: str) -> float:
    from segkit.config.recipe import ModelConfig
    from segkit.labels import LabelSet
    from segkit.models import build_model

    model = build_model(ModelConfig(family="segformer", size=size), LabelSet(("a", "b", "c"))).to(device).eval()
    x = torch.randn(batch, 3, res, res, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        return batch / timed(lambda: model(x), steps)


def loader_rate(workers: int, batches: int) -> float:
    from segkit.config.recipe import load_recipe
    from segkit.data import build_data
    from segkit.data.loaders import build_train_loader

    recipe = load_recipe(ROOT / "recipes" / "camvid-4class-segformer.yaml",
                         [f"data.path={SHARED / 'camvid'}", f"train.num_workers={workers}"])
    data = build_data(recipe, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    loader, items, sampler = build_train_loader(data, recipe.train)
    items.set_epoch(0)
    sampler.set_epoch(0)
    it = iter(loader)
    next(it)
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * recipe.train.batch_size / (time.perf_counter() - started)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the card's dense bf16 peak")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=16)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        size, seg_size, batch, res, steps, workers, batches = "tiny", "tiny", 2, 64, 1, 2, 2
    else:
        if device != "cuda":
            raise SystemExit("no CUDA GPU here: run with --smoke to check the script, or on a GPU machine")
        size, seg_size, batch, res, steps, workers, batches = "swin-base", "b0", args.batch, 512, args.steps, args.workers, 40
    rows = []
    for compiled in (False, True):
        r = maskformer(size, batch, res, compiled, steps, device, args.peak_tflops)
        name = f"MaskFormer {size} {res}px bf16" + (", torch.compile" if compiled else "")
        record(args.jsonl, "gpu_maskformer", smoke=args.smoke, compiled=compiled, size=size, res=res, batch=batch, **r)
        rows.append([name + " training", f"{r['images_per_s']:.1f}", f"{100 * r['mfu']:.1f}%",
                     f"{r['peak_mem_gb']:.1f}", f"matching {100 * r['matching_share']:.0f}% of a step"])
        rows.append([name + " inference", f"{r['inference_images_per_s']:.1f}", "", "", ""])
    seg = segformer_inference(seg_size, batch * 4, res, steps, device)
    record(args.jsonl, "gpu_segformer_inference", smoke=args.smoke, size=seg_size, res=res, images_per_s=seg)
    rows.append([f"SegFormer {seg_size} {res}px bf16 inference", f"{seg:.1f}", "", "", ""])
    data = loader_rate(workers, batches)
    record(args.jsonl, "gpu_data_pipeline", smoke=args.smoke, workers=workers, images_per_s=data)
    rows.append([f"data pipeline, {workers} workers (CamVid 256 px crops)", f"{data:.1f}", "", "", ""])
    print(f"{device}: {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU (smoke)'}")
    print(table(["", "images/s", "MFU", "peak GB", ""], rows))


if __name__ == "__main__":
    main()
