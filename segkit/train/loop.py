"""`segkit train`: setup -> fit (train_step, run_eval) -> finish, through accelerate.

Read top to bottom: `setup` builds every piece from the recipe into a `Trainer` (trainer.py),
`fit` is the loop, `finish` scores the exported model on val and test and writes the run's report.
What the loop writes is in saving.py (atomic, exactly resumable: checkpoint.py, data/sampling.py),
what it does when something goes wrong in faults.py, and a time budget's plan in time_budget.py.
SIGINT/SIGTERM save a checkpoint and stop cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch.utils.data import IterableDataset
from tqdm.auto import tqdm

from segkit.config.checks import parse_duration
from segkit.config.recipe import Recipe, save_recipe
from segkit.config.sections import InputSpec, TrainConfig, hw
from segkit.data.classes import select_classes
from segkit.data.dataset import build_data
from segkit.data.loaders import build_train_loader, eval_loader
from segkit.data.pixels import DeviceNormalise
from segkit.data.skips import SkipLog
from segkit.data.source import SPLITS
from segkit.data.sources.hub_datasets import load_source
from segkit.evaluation.report import summary_line
from segkit.evaluation.scoring import evaluate, report_splits
from segkit.infer.scores import eval_transform, upsample_scores
from segkit.models.build import build_model, load_model
from segkit.processes import end_processes
from segkit.run_folder import RunFolder, write_json
from segkit.train.banner import banner, flat_config
from segkit.train.calibrate import calibrate_run, confirm_calibration, describe_calibration
from segkit.train.checkpoint import TrainerState, fit_to_layout, load_checkpoint, resolve_resume
from segkit.train.ema import WeightEMA
from segkit.train.faults import batch_to_step_on, check_bad_steps, lost_worker, note_skips, step_guard, sync_skips
from segkit.train.guard import RunStopped, step_if_finite
from segkit.train.head_start import carry_head
from segkit.train.losses import build_loss
from segkit.train.lost_workers import worker_was_killed
from segkit.train.optim import build_optimizer, build_scheduler
from segkit.train.runtime import StopRequest, choose_precision, make_accelerator, prepare_run, size_threads
from segkit.train.saving import export_model, write_checkpoint
from segkit.train.space import write_failed
from segkit.train.time_budget import PROBE_SKIP, PROBE_STEPS, Plan, budget_clock, follow_budget, record_elapsed
from segkit.train.trainer import Trainer

log = logging.getLogger("segkit")

# ----------------------------------------------------------------------------------- setup


def setup(recipe: Recipe, output_dir: str | Path, resume: str | bool | None, overwrite: bool) -> Trainer:
    """Build data, model, loss, optimizer and loaders; restore a checkpoint when resuming.

    The label set comes from the class selection; normalisation and the evaluation transform come
    from the model, so the model is built between the two.
    """
    cfg = recipe.train
    run = RunFolder(output_dir)
    prepare_run(run, bool(resume), overwrite)  # on the main process, behind a barrier
    # first, so that everything below runs on the right number of threads; torchrun (under
    # accelerate launch) says how many processes share this machine
    threads = size_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    set_seed(cfg.seed)
    source = load_source(recipe.data)
    selection = select_classes(source, recipe.classes)
    model = build_model(recipe.model, selection.labels, recipe.loss, InputSpec.from_augment(recipe.augment))
    data = build_data(recipe, model.image_mean, model.image_std, source=source, selection=selection,
                      eval_transform=eval_transform(model))
    if resume:
        model.carried_head = model.head_note = None  # the checkpoint holds the head training made
    head, carried = carry_head(model, data, recipe)
    precision = choose_precision(cfg, model, hw(recipe.augment.crop_size))
    accelerator = make_accelerator(cfg, run, precision)
    criterion = None if model.has_own_loss else build_loss(recipe.loss, data.labels.num_classes, data.stats)
    if accelerator.is_main_process:
        save_recipe(recipe, run.recipe)
        write_json(run.stats, data.stats.to_dict())
        print(banner(recipe, data, model, accelerator, criterion, threads, precision, head), flush=True)

    pin = accelerator.device.type == "cuda"  # pinned batches make accelerate's copies non-blocking
    loader, items, sampler = build_train_loader(data, cfg, pin_memory=pin, targets=model.train_targets())
    batch = cfg.eval_batch_size or cfg.batch_size
    val_loader = None if data.val is None else eval_loader(
        data.val, batch, cfg.num_workers, accelerator.process_index, accelerator.num_processes, pin_memory=pin,
        persistent=True)
    optimizer = build_optimizer(model, cfg)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        # Small per-GPU batches make per-process BatchNorm statistics noisy (SegFormer's and the vit
        # heads' BN); torch's SyncBatchNorm refuses CPU tensors, so CPU runs keep plain BN.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    prepared, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if isinstance(data.train, IterableDataset):
        # A stream gets accelerate's batch dispatcher, which drops the loader's generator: each
        # iterator would then draw its seed from the global RNG, and a resumed run, which makes
        # one more iterator (to skip the batches already trained on), would shift dropout's numbers.
        loader.generator = torch.Generator().manual_seed(cfg.seed)
    # The schedule's length from the prepared loader: this process's batches per epoch, after
    # accelerate's sharding drops what does not fill a batch on every process.
    streamed = isinstance(data.train, IterableDataset)
    total_steps, epochs = budget(cfg, None if streamed else len(loader))
    plan = Plan(parse_duration(cfg.time_budget)) if cfg.time_budget is not None else None
    if plan is not None:
        total_steps, epochs = plan.total, 10**9  # until the plan is measured; then the clock decides
    scheduler = accelerator.prepare(build_scheduler(optimizer.optimizer, cfg, total_steps, plan))
    if accelerator.is_main_process:
        length = (f"time {cfg.time_budget}: the step rate is measured over steps {PROBE_SKIP + 1}-"
                  f"{PROBE_SKIP + PROBE_STEPS}, then the steps, warmup, decay and evaluations are planned to fit"
                  if plan is not None else f"{total_steps} optimizer steps ({epochs} epochs)")
        print(f"  budget   {length}, batch {cfg.batch_size} x "
              f"{accelerator.num_processes} process(es) x {cfg.grad_accum} accumulation", flush=True)
    if criterion is not None:
        criterion = criterion.to(accelerator.device)

    ema = None
    if cfg.ema_decay is not None:
        ema = WeightEMA(accelerator.unwrap_model(prepared), cfg.ema_decay)
        accelerator.register_for_checkpointing(ema)  # saved and restored with every checkpoint
    state = TrainerState(labels=data.labels.to_dict())
    ckpt = resolve_resume(resume, run.checkpoints)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt, data.labels)
        if plan is not None and state.plan:
            plan.__dict__.update(state.plan)  # in place: the scheduler reads this object
            total_steps = plan.total
        log.info("resumed from %s at step %d", ckpt, state.step)
        if (moved := fit_to_layout(state, ckpt, accelerator.num_processes, cfg.batch_size, cfg.grad_accum)) and \
                accelerator.is_main_process:
            print(f"  resume   {moved}", flush=True)
    state.world_size, state.batch_size, state.grad_accum = accelerator.num_processes, cfg.batch_size, cfg.grad_accum
    if cfg.tracker != "none":
        accelerator.init_trackers("logs", config=flat_config(recipe))
    at_start = cfg.eval_at_start if cfg.eval_at_start is not None else carried
    return Trainer(recipe=recipe, run=run, accelerator=accelerator, model=prepared, optimizer=optimizer,
                   scheduler=scheduler, criterion=criterion, loader=loader, items=items, sampler=sampler,
                   val_loader=val_loader, data=data, total_steps=total_steps, epochs=epochs, state=state,
                   stop=StopRequest(), eval_at_start=at_start, ema=ema,
                   budget=None if plan is None else budget_clock(plan, cfg, data, accelerator, state.step, precision),
                   normalise=DeviceNormalise(model.image_mean, model.image_std))


def budget(cfg: TrainConfig, batches_per_epoch: int | None) -> tuple[int, int]:
    """(total optimizer steps, epochs) from an epoch or a step budget. A stream (no length) runs
    passes over the data until the step budget is spent."""
    if batches_per_epoch is None:
        return cfg.max_steps or 0, 10**9
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    if cfg.max_steps:
        return cfg.max_steps, math.ceil(cfg.max_steps / steps_per_epoch)
    return max(1, round(cfg.epochs * steps_per_epoch)), math.ceil(cfg.epochs)


# ----------------------------------------------------------------------------------- the loop


def checkpoint(t: Trainer) -> None:
    """A resumable checkpoint, once the guard's verdicts are read: a run it stops saves nothing."""
    check_bad_steps(t)
    sync_skips(t)  # the counts the checkpoint holds are every process's
    write_checkpoint(t)


def train_step(t: Trainer, batch: dict[str, torch.Tensor], weight: float = 1.0) -> torch.Tensor:
    """One forward/backward; the optimizer steps only when accumulation is complete, and only
    when the loss and the gradient norm are finite (train/guard.py: no host sync on a GPU).
    `weight` 0: a stand-in batch that takes part in the collectives and adds no gradient."""
    # uint8 crops and labels come off the (pinned, non-blocking) copy; widening and normalising
    # them here is elementwise work on the device, not a sync
    labels, guard = batch["labels"].long(), step_guard(t)
    pixels = t.normalise(batch["pixel_values"]) if t.normalise is not None else batch["pixel_values"]
    targets = {k: batch[k] for k in ("mask_labels", "class_labels") if k in batch}  # built in the collate
    guard.before_forward(t.model)
    with t.accelerator.accumulate(t.model):
        if t.criterion is None:
            loss = t.model(pixels, labels=labels, **targets).loss
        else:
            scores = t.model(pixels).scores
            loss = t.criterion(upsample_scores(scores, labels.shape[-2:]).float(), labels)
        loss = loss * weight if weight != 1.0 else loss
        t.accelerator.backward(loss)
        guard.add_loss(loss)
        if t.accelerator.sync_gradients:
            norm = None
            if t.cfg.max_grad_norm > 0:
                norm = t.accelerator.clip_grad_norm_(t.model.parameters(), t.cfg.max_grad_norm)
            ok = guard.verdict(norm)
            if t.accelerator.num_processes > 1:
                # every process must skip together; a collective on the device, not a host sync
                ok = t.accelerator.reduce(ok.to(torch.int32), "sum") == t.accelerator.num_processes
            step_if_finite(t.optimizer, ok, scaled=t.accelerator.scaler is not None)
            guard.restore_buffers(ok)
            if t.ema is not None:
                t.ema.update(t.accelerator.unwrap_model(t.model), ok)
            t.scheduler.step()  # a skipped step still spends its place in the schedule and the budget
            t.optimizer.zero_grad(set_to_none=True)
            guard.record(t.state.step + 1, ok)
    return loss.detach()


def run_eval(t: Trainer) -> None:
    """Evaluate, export the model when it is the best so far, track early stopping."""
    if t.val_loader is None:
        return
    check_bad_steps(t)  # evaluation syncs anyway; a model the guard has stopped is not scored
    sync_skips(t)
    with _averaged(t):  # with EMA on, the average is scored and exported; training goes on from the raw weights
        metrics = evaluate(t.model, t.val_loader, t.data.labels, t.accelerator, mixed_precision=True)
        t.state.last_eval_step = t.state.step
        miou = metrics[t.cfg.select_by]["mIoU"] or 0.0  # train.select_by: which mean picks the best model
        improved = miou > t.state.best_miou
        if improved:
            t.state.best_miou, t.state.best_step, t.state.evals_since_best = miou, t.state.step, 0
            export_model(t)
    if not improved:
        t.state.evals_since_best += 1
    flat = {f"val/{view}_{k}": v for view in ("strict", "foreground") for k, v in metrics[view].items() if v is not None}
    t.accelerator.log(flat, step=t.state.step)
    if t.accelerator.is_main_process:
        per_class = {n: c["iou"] for n, c in metrics["per_class"].items()}
        t.run.log({"step": t.state.step, "epoch": t.state.epoch, "eval": flat, "per_class_iou": per_class, "best": improved})
        tqdm.write(f"step {t.state.step}: val {summary_line(metrics)}" + ("  (best)" if improved else ""))


def _averaged(t: Trainer):
    """The EMA weights in the model for the block, when `train.ema_decay` is set."""
    return t.ema.applied(t.accelerator.unwrap_model(t.model)) if t.ema is not None else contextlib.nullcontext()


def start_eval(t: Trainer) -> None:
    """Where training starts from: scored on val before step 1, kept in start.json. Not a candidate
    for the best model: training is what the run is for."""
    metrics = evaluate(t.model, t.val_loader, t.data.labels, t.accelerator, mixed_precision=True)
    if t.accelerator.is_main_process:
        per_class = {n: c["iou"] for n, c in metrics["per_class"].items()}
        write_json(t.run.start, {k: v for k, v in metrics.items() if k != "matrix"})
        t.run.log({"step": 0, "epoch": 0, "eval": {f"val/strict_{k}": v for k, v in metrics["strict"].items()},
                   "per_class_iou": per_class, "best": False})
        tqdm.write(f"step 0 (before training): val {summary_line(metrics)}")


def after_step(t: Trainer, loss: torch.Tensor, bar: tqdm, images: int, started: float) -> bool:
    """Logging, evaluation and checkpoints after an optimizer step. Returns True to stop."""
    s, cfg = t.state, t.cfg
    bar.update(1)
    if s.step % cfg.log_every == 0 or t.accelerator.device.type == "cpu":
        check_bad_steps(t)  # on a GPU only where logging syncs anyway; on the CPU a read is free
    if s.step % cfg.log_every == 0:
        # Only logged steps read the loss: reduce + .item() is a device sync and a collective.
        value = t.accelerator.reduce(loss, "mean").item()
        value = value if math.isfinite(value) else None  # a skipped step's; JSON has no NaN
        lr = t.scheduler.get_last_lr()[-1]
        rate = images / max(1e-9, time.perf_counter() - started)
        bar.set_postfix(loss=f"{value:.4f}" if value is not None else "nan", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
        if t.accelerator.is_main_process:
            t.run.log({"step": s.step, "epoch": s.epoch, "loss": value, "lr": lr, "images_per_s": rate,
                       "bad_steps": s.bad_steps, "skipped_samples": s.skipped})
            t.accelerator.log({"train/loss": value, "train/lr": lr, "train/images_per_s": rate}, step=s.step)
    if t.budget is None:
        evaluated = cfg.eval_every > 0 and s.step % cfg.eval_every == 0
    else:
        evaluated = t.budget.evaluates(s.step)
    tick = time.perf_counter()
    if evaluated:
        run_eval(t)
    evaluating_s = time.perf_counter() - tick
    stop = t.stop.agreed(t.accelerator)  # every process stops after the same step
    if evaluated or (cfg.checkpoint_every > 0 and s.step % cfg.checkpoint_every == 0) or stop:
        checkpoint(t)
    if t.budget is not None:
        stop = follow_budget(t, bar, time.perf_counter() - tick if evaluated else None, evaluating_s) or stop
    early = cfg.early_stopping > 0 and s.evals_since_best >= cfg.early_stopping
    if early and t.accelerator.is_main_process:
        tqdm.write(f"Early stopping: no better val mIoU in {cfg.early_stopping} evaluations.")
    return stop or early or s.step >= t.total_steps


def fit(t: Trainer) -> str:
    """The loop. Returns how it ended: "done", "early_stop" or "interrupted"."""
    s, acc = t.state, t.accelerator
    t.model.train()
    bar = tqdm(total=t.total_steps, initial=s.step, desc="train", disable=not acc.is_local_main_process, dynamic_ncols=True)
    batch_images = t.cfg.batch_size * acc.num_processes
    if t.eval_at_start and s.step == 0 and t.val_loader is not None:
        tick = time.perf_counter()
        start_eval(t)
        if t.budget is not None:
            t.budget.start_evaluated(time.perf_counter() - tick)
    t.skips = SkipLog(t.run.root, t.recipe.data.max_skipped)
    if acc.is_main_process:
        t.run.log({"step": s.step, "event": "start"})  # with "end": the training's wall time
        t.skips.resume(s.step)  # skips after the checkpoint are met again, in the same order
    while s.epoch < t.epochs and s.step < t.total_steps:
        for obj in (t.sampler, t.items, t.loader):
            if obj is not None:
                obj.set_epoch(s.epoch)  # same permutation and crops for this epoch, resumed or not
        loader = acc.skip_first_batches(t.loader, s.batches_in_epoch) if s.batches_in_epoch else t.loader
        started, images, stop = time.perf_counter(), 0, False
        at_step = s.batches_in_epoch  # the position of the last optimizer step: what a checkpoint holds
        try:
            for batch in loader:
                note_skips(t, batch)
                batch, weight = batch_to_step_on(t, batch)
                if batch is None:  # every sample of it was unreadable
                    s.batches_in_epoch += 1
                    continue
                loss = train_step(t, batch, weight)
                s.batches_in_epoch += 1
                images += batch_images
                if not acc.sync_gradients:
                    continue
                s.step += 1
                at_step = s.batches_in_epoch
                stop = after_step(t, loss, bar, images, started)
                if stop:
                    break
        except RuntimeError as e:
            if not worker_was_killed(e):
                raise
            bar.close()
            raise RunStopped(lost_worker(t, e, at_step)) from None
        if not stop:
            s.epoch, s.batches_in_epoch = s.epoch + 1, 0
            if t.cfg.eval_every == 0 and t.budget is None:
                run_eval(t)
                checkpoint(t)
        if t.stop.stopping:
            bar.close()
            return "interrupted"
        if t.cfg.early_stopping and s.evals_since_best >= t.cfg.early_stopping:
            bar.close()
            return "early_stop"
    if acc.is_main_process:
        t.run.log({"step": s.step, "event": "end"})
    if s.last_eval_step != s.step:
        run_eval(t)  # the budget ended between scheduled evaluations
    if not t.run.checkpoint(s.step).is_dir():
        checkpoint(t)
    bar.close()
    return "done"


# ----------------------------------------------------------------------------------- the end


def finish(t: Trainer) -> dict[str, dict[str, Any]]:
    """Reload the exported model from disk (what users will load) and report on val and test."""
    t.accelerator.wait_for_everyone()
    model = load_model(t.run.model).to(t.accelerator.device)
    splits = [s for s in SPLITS if s != "train" and getattr(t.data, s) is not None]
    if not splits:
        return {}
    extra = {"best_step": t.state.best_step, "steps": t.state.step, "recipe": t.recipe.name,
             "bad_steps": t.state.bad_steps, "skipped_samples": t.state.skipped, "select_by": t.cfg.select_by,
             "ema_decay": t.cfg.ema_decay}
    calibration = calibrate_run(model, t.data, t.run, t.accelerator, t.cfg, t.recipe.model.family,
                                test_before=t.budget is None)  # under a budget, the test pass goes to training
    if calibration is not None:
        extra["calibration"] = calibration
    results = report_splits(model, t.data, splits, t.run, t.accelerator, t.recipe, extra)
    if confirm_calibration(model, calibration, results.get("val"), t.run, t.accelerator, t.cfg):
        results = report_splits(model, t.data, splits, t.run, t.accelerator, t.recipe, extra)  # of the model shipped
    if calibration is not None and t.accelerator.is_main_process:
        print(describe_calibration(calibration, results))
    return results


def train(recipe: Recipe, output_dir: str | Path, resume: str | bool | None = None, overwrite: bool = False) -> dict:
    """Train `recipe` into `output_dir`; returns how it ended and the final metrics per split."""
    started = time.perf_counter()
    t = setup(recipe, output_dir, resume, overwrite)
    t.started = started
    if t.budget is not None:
        t.budget.deadline += started - t.budget.started  # the budget counts set-up too
        t.budget.started = started
    try:
        ended = fit(t)
    finally:
        t.stop.restore()
    if ended == "interrupted":
        end_processes(t.accelerator)  # the processes exit together: torchrun ends the others at the first exit
        return {"status": "interrupted", "step": t.state.step}
    if t.state.best_step < 0 or t.val_loader is None:
        with _averaged(t):
            export_model(t)  # no evaluation happened: ship the final weights
    try:
        result = finish(t)
        record_elapsed(t)
    except OSError as e:  # the report's files are written atomically (run_folder.py): none is half
        raise write_failed("the final report", t.run.root, e, 0) from None
    end_processes(t.accelerator)
    return {"status": ended, **result}
