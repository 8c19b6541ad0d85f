"""`segkit train`: fit / train_step / evaluate, through accelerate.

The same code runs as plain `python` on CPU or one GPU, and unchanged under `accelerate launch`
on several GPUs or nodes. Checkpoints are atomic and resumable exactly (see checkpoint.py and
sampling.py); SIGINT/SIGTERM save one and stop cleanly.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from segkit.checkpoint import TrainerState, load_checkpoint, prune, resolve_resume, save_checkpoint
from segkit.config import Recipe, TrainConfig, save_recipe
from segkit.evaluation import eval_loader, evaluate, summary_line
from segkit.optim import build_optimizer, build_scheduler
from segkit.run_folder import RunFolder
from segkit.sampling import EpochSeededItems, EpochShuffle, quiet_worker

log = logging.getLogger("segkit")


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each optimizer step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nsegkit: got {signal.Signals(signum).name}; saving a checkpoint after this step...", flush=True)

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def resolve_precision(choice: str, on_cpu: bool) -> str:
    """`auto`: bf16 on GPUs that support it, fp16 on older GPUs, none on CPU."""
    if choice == "fp16" and on_cpu:
        raise ValueError("train.mixed_precision: fp16 needs a GPU (accelerate ignores it on CPU). Use bf16 or no.")
    if choice != "auto":
        return choice
    if on_cpu:
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(cfg: TrainConfig, run: RunFolder, find_unused: bool) -> Accelerator:
    import importlib.util

    if cfg.tracker != "none" and importlib.util.find_spec(cfg.tracker) is None:
        raise ValueError(f"train.tracker: {cfg.tracker} is not installed. `pip install {cfg.tracker}`, "
                         "or set train.tracker to tensorboard or none.")
    on_cpu = not torch.cuda.is_available()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused else []
    return Accelerator(
        cpu=on_cpu,  # without it, `accelerate launch --multi_gpu` on CPU starts independent processes
        mixed_precision=resolve_precision(cfg.mixed_precision, on_cpu),
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=str(run.root),
        step_scheduler_with_optimizer=False,  # we step it once per optimizer step, on every process count
        kwargs_handlers=handlers,
    )


@dataclass
class Trainer:
    """Everything the loop touches, built once by `train()`."""

    recipe: Recipe
    run: RunFolder
    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    criterion: Any
    loader: DataLoader
    items: Any
    sampler: Any
    val_loader: DataLoader | None
    labels: Any
    data: Any
    """The DataBundle: the final report scores its val/test splits with the exported model."""
    total_steps: int
    epochs: int
    state: TrainerState
    stop: StopRequest

    @property
    def cfg(self) -> TrainConfig:
        return self.recipe.train


def build_train_loader(data: Any, cfg: TrainConfig) -> tuple[DataLoader, Any, Any]:
    """(loader, the object whose set_epoch reseeds augmentation, the sampler or None)."""
    from segkit.data import train_collate

    if isinstance(data.train, IterableDataset):
        return streamed_loader(data.train, cfg), data.train, None
    items = EpochSeededItems(data.train, cfg.seed)
    if cfg.sampler == "rare":
        from segkit.data.balance import RareClassSampler, image_weights

        sampler = RareClassSampler(image_weights(data.stats, cfg.sampler_power, background=data.labels.background),
                                   num_samples=len(items), seed=cfg.seed)
    else:
        sampler = EpochShuffle(len(items), cfg.seed)
    loader = DataLoader(
        items, batch_size=cfg.batch_size, sampler=sampler, collate_fn=train_collate, drop_last=True,
        num_workers=cfg.num_workers, worker_init_fn=quiet_worker,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG out of data loading
    )
    if len(loader) == 0:
        raise ValueError(f"train.batch_size: {cfg.batch_size} is larger than the {len(items)} training samples.")
    return loader, items, sampler


def streamed_loader(dataset: IterableDataset, cfg: TrainConfig) -> DataLoader:
    """A stream has no length and no random access: rows come in (shuffled-buffer) order, each
    worker reads its own shards and reseeds its augmentation. Resume replays the stream's epoch
    up to the saved position, so it needs the same shards."""
    from segkit.data import train_collate, worker_init_fn

    if not cfg.max_steps:
        raise ValueError("train.max_steps: a streamed dataset has no length to count epochs in; set a step budget.")
    if cfg.sampler != "uniform":
        raise ValueError("train.sampler: a streamed dataset cannot be resampled; use `uniform`.")

    def init(worker_id: int) -> None:
        quiet_worker(worker_id)
        worker_init_fn(worker_id)

    return DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=train_collate, drop_last=True,
                      num_workers=cfg.num_workers, worker_init_fn=init)


def train_step(t: Trainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One forward/backward; the optimizer steps only when accumulation is complete."""
    from segkit.models.outputs import upsample_scores

    labels = batch["labels"]
    with t.accelerator.accumulate(t.model):
        own_loss = t.criterion is None
        out = t.model(batch["pixel_values"], labels=labels if own_loss else None)
        loss = out.loss if own_loss else t.criterion(upsample_scores(out.scores, labels.shape[-2:]).float(), labels)
        t.accelerator.backward(loss)
        if t.accelerator.sync_gradients:
            if t.cfg.max_grad_norm > 0:
                t.accelerator.clip_grad_norm_(t.model.parameters(), t.cfg.max_grad_norm)
            t.optimizer.step()
            t.scheduler.step()
            t.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def run_eval(t: Trainer) -> None:
    """Evaluate, export the model when it is the best so far, track early stopping."""
    if t.val_loader is None:
        return
    resized = t.recipe.augment.eval_mode == "resize"
    metrics = evaluate(t.model, t.val_loader, t.labels, t.accelerator, resized_input=resized)
    t.state.last_eval_step = t.state.step
    miou = metrics["strict"]["mIoU"] or 0.0
    improved = miou > t.state.best_miou
    if improved:
        t.state.best_miou, t.state.best_step, t.state.evals_since_best = miou, t.state.step, 0
        export_model(t)
    else:
        t.state.evals_since_best += 1
    flat = {f"val/{view}_{k}": v for view in ("strict", "foreground") for k, v in metrics[view].items() if v is not None}
    t.accelerator.log(flat, step=t.state.step)
    if t.accelerator.is_main_process:
        per_class = {n: c["iou"] for n, c in metrics["per_class"].items()}
        t.run.log({"step": t.state.step, "epoch": t.state.epoch, "eval": flat, "per_class_iou": per_class, "best": improved})
        tqdm.write(f"step {t.state.step}: val {summary_line(metrics)}" + ("  (best)" if improved else ""))


def export_model(t: Trainer) -> None:
    """Write the current weights to model/ (Hugging Face layout), replacing it atomically."""
    t.accelerator.wait_for_everyone()
    if t.accelerator.is_main_process:
        tmp = t.run.root / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        t.accelerator.unwrap_model(t.model).save_pretrained(tmp)
        shutil.rmtree(t.run.model, ignore_errors=True)
        tmp.replace(t.run.model)
    t.accelerator.wait_for_everyone()


def checkpoint(t: Trainer) -> None:
    save_checkpoint(t.accelerator, t.run.checkpoints, t.state)
    if t.accelerator.is_main_process:
        prune(t.run.checkpoints, t.cfg.keep_last, t.state.best_step)


def after_step(t: Trainer, loss: torch.Tensor, bar: tqdm, images: int, started: float) -> bool:
    """Logging, evaluation and checkpoints after an optimizer step. Returns True to stop."""
    s, cfg = t.state, t.cfg
    bar.update(1)
    if s.step % cfg.log_every == 0:
        # Only logged steps read the loss: reduce + .item() is a device sync and a collective.
        value = t.accelerator.reduce(loss, "mean").item()
        lr = t.scheduler.get_last_lr()[-1]
        rate = images / max(1e-9, time.perf_counter() - started)
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
        if t.accelerator.is_main_process:
            t.run.log({"step": s.step, "epoch": s.epoch, "loss": value, "lr": lr, "images_per_s": rate})
            t.accelerator.log({"train/loss": value, "train/lr": lr, "train/images_per_s": rate}, step=s.step)
    evaluated = cfg.eval_every > 0 and s.step % cfg.eval_every == 0
    if evaluated:
        run_eval(t)
    if evaluated or (cfg.checkpoint_every > 0 and s.step % cfg.checkpoint_every == 0) or t.stop.signum:
        checkpoint(t)
    early = cfg.early_stopping > 0 and s.evals_since_best >= cfg.early_stopping
    if early and t.accelerator.is_main_process:
        tqdm.write(f"Early stopping: no better val mIoU in {cfg.early_stopping} evaluations.")
    return bool(t.stop.signum) or early or s.step >= t.total_steps


def fit(t: Trainer) -> str:
    """The loop. Returns how it ended: "done", "early_stop" or "interrupted"."""
    s, acc = t.state, t.accelerator
    t.model.train()
    bar = tqdm(total=t.total_steps, initial=s.step, desc="train", disable=not acc.is_local_main_process, dynamic_ncols=True)
    batch_images = t.cfg.batch_size * acc.num_processes
    while s.epoch < t.epochs and s.step < t.total_steps:
        for obj in (t.sampler, t.items, t.loader):
            if obj is not None:
                obj.set_epoch(s.epoch)  # same permutation and crops for this epoch, resumed or not
        loader = acc.skip_first_batches(t.loader, s.batches_in_epoch) if s.batches_in_epoch else t.loader
        started, images, stop = time.perf_counter(), 0, False
        for batch in loader:
            loss = train_step(t, batch)
            s.batches_in_epoch += 1
            images += batch_images
            if not acc.sync_gradients:
                continue
            s.step += 1
            stop = after_step(t, loss, bar, images, started)
            if stop:
                break
        if not stop:
            s.epoch, s.batches_in_epoch = s.epoch + 1, 0
            if t.cfg.eval_every == 0:
                run_eval(t)
                checkpoint(t)
        if t.stop.signum:
            bar.close()
            return "interrupted"
        if t.cfg.early_stopping and s.evals_since_best >= t.cfg.early_stopping:
            bar.close()
            return "early_stop"
    if s.last_eval_step != s.step:
        run_eval(t)  # the budget ended between scheduled evaluations
    if not (t.run.checkpoints / f"step-{s.step:07d}").is_dir():
        checkpoint(t)
    bar.close()
    return "done"


def budget(cfg: TrainConfig, batches_per_epoch: int | None) -> tuple[int, int]:
    """(total optimizer steps, epochs) from an epoch or a step budget. A stream (no length) runs
    passes over the data until the step budget is spent."""
    if batches_per_epoch is None:
        return cfg.max_steps or 0, 10**9
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    if cfg.max_steps:
        return cfg.max_steps, math.ceil(cfg.max_steps / steps_per_epoch)
    return max(1, round(cfg.epochs * steps_per_epoch)), math.ceil(cfg.epochs)


def setup(recipe: Recipe, output_dir: str | Path, resume: str | bool | None, overwrite: bool) -> Trainer:
    """Build data, model, optimizer and loaders; restore a checkpoint when resuming."""
    from segkit.data import build_data
    from segkit.losses import build_loss, describe_loss
    from segkit.models import build_model

    cfg = recipe.train
    run = RunFolder(output_dir)
    run.prepare(bool(resume), overwrite, is_main=True)
    set_seed(cfg.seed)
    data, model = build_data_and_model(recipe, build_data, build_model)
    accelerator = make_accelerator(cfg, run, find_unused=model.has_own_loss)
    criterion = None if model.has_own_loss else build_loss(recipe.loss, data.labels.num_classes, data.stats)
    if accelerator.is_main_process:
        save_recipe(recipe, run.recipe)
        run.write_json(run.stats, data.stats.to_dict())
        loss_line = describe_loss(recipe.loss, getattr(criterion, "weight", None), data.labels.names) if criterion \
            else f"loss: {recipe.model.family}'s own set loss"
        print(banner(recipe, data, model, accelerator, loss_line), flush=True)
    loader, items, sampler = build_train_loader(data, cfg)
    val = data.val
    val_loader = eval_loader(val, cfg.eval_batch_size or cfg.batch_size, cfg.num_workers, accelerator) if val else None
    optimizer = build_optimizer(model, cfg)
    streamed = isinstance(data.train, IterableDataset)
    total_steps, epochs = budget(cfg, None if streamed else math.ceil(len(loader) / accelerator.num_processes))
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        # Small per-GPU batches make per-process BatchNorm statistics noisy (SegFormer's and the vit
        # heads' BN); torch's SyncBatchNorm refuses CPU tensors, so CPU runs keep plain BN.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if accelerator.is_main_process:
        print(f"  budget   {total_steps} optimizer steps ({epochs} epochs), batch {cfg.batch_size} x "
              f"{accelerator.num_processes} process(es) x {cfg.grad_accum} accumulation", flush=True)
    if criterion is not None:
        criterion = criterion.to(accelerator.device)
    state = TrainerState(labels=data.labels.to_dict())
    ckpt = resolve_resume(resume, run.checkpoints)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt, data.labels)
        log.info("resumed from %s at step %d", ckpt, state.step)
    if cfg.tracker != "none":
        accelerator.init_trackers("logs", config=_flat_config(recipe))
    return Trainer(recipe, run, accelerator, model, optimizer, scheduler, criterion, loader, items, sampler,
                   val_loader, data.labels, data, total_steps, epochs, state, StopRequest())


def banner(recipe: Recipe, data: Any, model: Any, accelerator: Accelerator, loss_line: str) -> str:
    """What is about to run, including each class's share of training pixels: a class at 0.3%
    explains a weak IoU before any training happens."""
    sizes = ", ".join(f"{s} {len(d) if hasattr(d, '__len__') else 'streamed'}"
                      for s in ("train", "val", "test") if (d := getattr(data, s)) is not None)
    share = data.stats.pixel_share(exclude_ignored=True)
    classes = ", ".join(f"{n} {100 * p:.2f}%" for n, p in zip(data.labels.names, share))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    origin = recipe.model.checkpoint or f"random weights, size {recipe.model.size}"
    return "\n".join([
        f"segkit train: {recipe.name}",
        f"  data     {recipe.data.format}: {sizes} images",
        f"  classes  share of labelled training pixels: {classes}",
        f"  model    {recipe.model.family} ({origin}), {params:.2f} M parameters",
        f"  device   {accelerator.device} x{accelerator.num_processes}, precision {accelerator.mixed_precision}",
        f"  {loss_line}",
    ])


def build_data_and_model(recipe: Recipe, build_data: Any, build_model: Any) -> tuple[Any, Any]:
    """The label set comes from the data; mean/std for normalisation come from the model."""
    from segkit.data import load_source, select_classes

    source = load_source(recipe.data)
    selection = select_classes(source, recipe.classes)
    model = build_model(recipe.model, selection.labels, recipe.loss)
    data = build_data(recipe, model.image_mean, model.image_std, source=source, selection=selection)
    return data, model


def _flat_config(recipe: Recipe) -> dict[str, Any]:
    """Trackers want scalars: flatten sections and stringify lists."""
    flat = {}
    for section, values in asdict(recipe).items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        else:
            flat[section] = values
    return flat


def train(recipe: Recipe, output_dir: str | Path, resume: str | bool | None = None, overwrite: bool = False) -> dict:
    """Train `recipe` into `output_dir`; returns how it ended and the final metrics per split."""
    from segkit.evaluation import finish

    t = setup(recipe, output_dir, resume, overwrite)
    try:
        ended = fit(t)
    finally:
        t.stop.restore()
    if ended == "interrupted":
        t.accelerator.end_training()
        return {"status": "interrupted", "step": t.state.step}
    if t.state.best_step < 0 or t.val_loader is None:
        export_model(t)  # no evaluation happened: ship the final weights
    result = finish(t)
    t.accelerator.end_training()
    return {"status": ended, **result}
