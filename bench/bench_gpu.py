"""GPU figures: MaskFormer Swin-B at 512 px in bf16 (training with and without torch.compile, with
model FLOPs utilisation; inference), SegFormer-B0 inference, and the data pipeline with 16 workers.

    python bench/bench_gpu.py [--peak-tflops 989]       # on a machine with a CUDA GPU
    python bench/bench_gpu.py --smoke                   # tiny models on CPU: the script works

FLOPs of a training step are counted by torch.utils.flop_counter (forward + backward of the
network; the set loss's matching is not counted) on the eager model, before anything is compiled:
under FlopCounterMode a compiled module's frames are marked to skip, and the "compile" row would
then time eager code. MFU is model FLOPs per second over the card's dense bf16 peak (H100 and H200
SXM: 989 TFLOP/s). Every row runs under bf16 autocast, inference included, and fp32 matmuls that
remain (outside autocast) use TF32. The training rows time the model alone (synthetic batches on
the device, no loader): the loader's own ceiling is the last row, at 512 px crops as the models
train, timed only after the batches the workers prefetched while starting are drained.
MaskFormer's Hungarian matching runs on the CPU inside the loss; the share of a step it takes is
printed with the training rows. Without ../shared/data (CamVid) the loader row is skipped, said at
the start.
"""

from __future__ import annotations

import time

import torch
from common import ROOT, SHARED, parser, record, table  # noqa: I001
from torch.utils.flop_counter import FlopCounterMode


def enable_tf32() -> None:
    """TF32 for fp32 matmuls and convolutions (what is left outside autocast: the set loss's cost
    matrices, the optimizer); torch's default keeps full fp32 on Ampere and later."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9; mixing it with the old flags is refused
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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


def maskformer(size: str, batch: int, res: int, compiled: str | None, steps: int, device: str, peak: float) -> dict:
    """`compiled`: the torch.compile backend, or None for eager."""
    from segkit.config.sections import ModelConfig
    from segkit.labels import LabelSet
    from segkit.models import build_model

    torch.manual_seed(0)
    labels = LabelSet(("background", "windowpane", "person", "door", "table", "painting"), background=0)
    model = build_model(ModelConfig(family="maskformer", size=size), labels).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, res, res, device=device)
    y = torch.randint(0, 6, (batch, res, res), device=device)
    # Counted on the eager model, before compiling: under FlopCounterMode, Dynamo marks the frames it
    # meets to skip, and the compiled module would then run eagerly. Counted on a proxy step (the
    # scores' mean as the loss): the set loss's Hungarian matching runs under no_grad, which the
    # counter's module tracker rejects, and costs few FLOPs anyway.
    with FlopCounterMode(display=False) as counter, torch.autocast(device, dtype=torch.bfloat16):
        model(x).scores.float().mean().backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    forward = torch.compile(model, backend=compiled) if compiled else model
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

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    matching.clear()
    seconds = timed(step, steps)
    timed_calls = matching[-steps:]  # the warm-up steps matched too
    match_share = sum(timed_calls) / len(timed_calls) / seconds if timed_calls else float("nan")
    train = {"images_per_s": batch / seconds, "tflop_per_step": flops / 1e12, "mfu": flops / seconds / (peak * 1e12),
             "matching_share": match_share,
             "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")}
    # graphs Dynamo compiled so far: > 0 after a compiled row shows that it ran compiled code
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    model.eval()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):  # the precision the row names
        infer = timed(lambda: forward(x), steps)
    return {**train, "compiled_graphs": graphs, "inference_images_per_s": batch / infer}


def segformer_inference(size: str, batch: int, res: int, steps: int, device: str) -> float:
    from segkit.config.sections import ModelConfig
    from segkit.labels import LabelSet
    from segkit.models import build_model

    model = build_model(ModelConfig(family="segformer", size=size), LabelSet(("a", "b", "c"))).to(device).eval()
    x = torch.randn(batch, 3, res, res, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        return batch / timed(lambda: model(x), steps)


def loader_rate(workers: int, batches: int, crop: int, device: str) -> float:
    """Training images/s out of the loader, as the trainer builds it (uint8, pinned on CUDA), with
    the copy to the device. The batches prefetched while the workers started are drained first:
    counted, they would inflate the rate."""
    from segkit.config.recipe import load_recipe
    from segkit.data import build_data
    from segkit.data.loaders import build_train_loader

    recipe = load_recipe(ROOT / "recipes" / "camvid-4class-segformer.yaml",
                         [f"data.path={SHARED / 'camvid'}", f"train.num_workers={workers}",
                          f"augment.crop_size={crop}"])
    data = build_data(recipe, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    loader, items, sampler = build_train_loader(data, recipe.train, pin_memory=device == "cuda")
    sampler.set_epoch(0)
    queued = max(1, workers * (loader.prefetch_factor or 1))
    it = iter(loader)
    for _ in range(queued):  # what the workers made while starting up
        next(it)
    started = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        batch["pixel_values"].to(device, non_blocking=True)
    sync()
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
        size, seg_size, batch, res, steps, workers, batches, crop = "tiny", "tiny", 2, 64, 1, 2, 2, 64
    else:
        if device != "cuda":
            raise SystemExit("no CUDA GPU here: run with --smoke to check the script, or on a GPU machine")
        size, seg_size, batch, res, steps, workers, batches, crop = ("swin-base", "b0", args.batch, 512, args.steps,
                                                                     args.workers, 40, 512)
    has_data = (SHARED / "camvid").is_dir()
    if not has_data:  # said now, not after the long GPU rows
        print(f"no CamVid under {SHARED}: the data-pipeline row is skipped", flush=True)
    if device == "cuda":
        enable_tf32()
    rows = []
    # the smoke run traces with Dynamo but skips Inductor's code generation (minutes on 2 cores)
    for compiled in (None, "eager" if args.smoke else "inductor"):
        r = maskformer(size, batch, res, compiled, steps, device, args.peak_tflops)
        name = f"MaskFormer {size} {res}px bf16" + (", torch.compile" if compiled else "")
        record(args.jsonl, "gpu_maskformer", smoke=args.smoke, compiled=compiled or False, size=size, res=res, batch=batch, **r)
        rows.append([name + " training", f"{r['images_per_s']:.1f}", f"{100 * r['mfu']:.1f}%",
                     f"{r['peak_mem_gb']:.1f}", f"matching {100 * r['matching_share']:.0f}% of a step"])
        rows.append([name + " inference", f"{r['inference_images_per_s']:.1f}", "", "", ""])
    seg = segformer_inference(seg_size, batch * 4, res, steps, device)
    record(args.jsonl, "gpu_segformer_inference", smoke=args.smoke, size=seg_size, res=res, images_per_s=seg)
    rows.append([f"SegFormer {seg_size} {res}px bf16 inference", f"{seg:.1f}", "", "", ""])
    if has_data:
        data = loader_rate(workers, batches, crop, device)
        record(args.jsonl, "gpu_data_pipeline", smoke=args.smoke, workers=workers, crop=crop, images_per_s=data)
        rows.append([f"data pipeline, {workers} workers (CamVid {crop} px crops, uint8)", f"{data:.1f}", "", "", ""])
    print(f"{device}: {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU (smoke)'}")
    print(table(["", "images/s", "MFU", "peak GB", ""], rows))


if __name__ == "__main__":
    main()
