"""What a run writes while it trains: model/ (the best model so far) and resumable checkpoints,
each atomic, checked finite and for space first (train/space.py), a failed write one message."""

from __future__ import annotations

import shutil

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from segkit.run_folder import RunFolder, replace_dir, temp_dir_for
from segkit.train.checkpoint import checkpoint_dirs, prune, save_checkpoint
from segkit.train.guard import RunStopped, all_finite, what_is_kept
from segkit.train.space import dir_bytes, free_bytes, human, not_enough_space, tensor_bytes, write_failed
from segkit.train.trainer import Trainer


def export_model(t: Trainer) -> None:
    """Write the current weights to model/ (Hugging Face layout), replacing it atomically."""
    model = t.accelerator.unwrap_model(t.model)
    if t.accelerator.is_main_process:
        _refuse_non_finite(t, model, "model/")
    write_model(model, t.run, t.accelerator)


def write_model(model: torch.nn.Module, run: RunFolder, accelerator: Accelerator) -> None:
    """`model` into the run's model/, replacing it atomically on the main process, after checking
    the space; every process waits for it (a calibrated head rewrites model/ through this too)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        needed = tensor_bytes(model)
        if (error := not_enough_space("model/", run.root, needed)) is not None:
            raise error
        tmp = temp_dir_for(run.model)
        try:
            model.save_pretrained(tmp)
            replace_dir(tmp, run.model)
        except Exception as e:  # a full disk, whatever the serialiser calls it (train/space.py)
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_failed("model/", run.root, e, needed) from None
    accelerator.wait_for_everyone()


def write_checkpoint(t: Trainer) -> None:
    """Save a resumable checkpoint, atomically, after checking that it is finite and will fit;
    warn when the one after it will not. The caller reads the guard first (`faults.check_bad_steps`):
    a run the guard stops writes nothing."""
    if t.budget is not None:  # the plan and the budget spent travel with the checkpoint
        t.state.plan = {**t.budget.plan.to_dict(), "spent_s": t.budget.spent()}
    final, root = t.run.checkpoint(t.state.step), t.run.checkpoints
    model = t.accelerator.unwrap_model(t.model)
    _refuse_non_finite(t, model, f"checkpoint {final.name}")
    previous = checkpoint_dirs(root)
    needed = dir_bytes(previous[-1]) if previous else tensor_bytes(model, t.optimizer)
    if (error := not_enough_space(f"checkpoint {final.name}", root, needed)) is not None:
        raise error
    try:
        save_checkpoint(t.accelerator, final, t.state)
    except Exception as e:  # save_checkpoint removed its temporary folder
        raise write_failed(f"checkpoint {final.name}", root, e, needed) from None
    if t.accelerator.is_main_process:
        prune(root, t.cfg.keep_last, t.run.checkpoint(t.state.best_step))
        needed, free = dir_bytes(final), free_bytes(root)
        if free < needed:
            tqdm.write(f"Warning: the next checkpoint needs about {human(needed)} and {root} has {human(free)} "
                       "free: it will not fit. Free space there or lower train.keep_last.")


def _refuse_non_finite(t: Trainer, model: torch.nn.Module, what: str) -> None:
    """The guard skips non-finite steps, so this should never fire; if it does (a NaN from a
    buffer, a bug), nothing non-finite is written."""
    if not all_finite(model):
        found = checkpoint_dirs(t.run.checkpoints)
        raise RunStopped(f"Not writing {what} at step {t.state.step}: the model holds non-finite weights. "
                         + what_is_kept(str(found[-1]) if found else None))
