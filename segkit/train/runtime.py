"""Where training runs: the accelerate `Accelerator` (devices, processes, precision, trackers), and
Ctrl-C / SIGTERM turned into a clean stop.

The same code runs as plain `python` on CPU or one GPU, and unchanged under `accelerate launch`
on several GPUs or nodes; segkit has no distributed layer of its own.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, is_initialized
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list

from segkit.config.sections import TrainConfig
from segkit.precision import Precision, cached_speedup, default_cache, resolve, step_probe
from segkit.run_folder import RunFolder, RunFolderError


def size_threads(local_processes: int) -> str:
    """Give torch the cores this process really has: those it may run on (affinity, e.g. under
    taskset or a container's cpuset), shared by the processes `accelerate launch` started on this
    machine. More threads than cores makes them wait on each other (two runs on 2 cores went from
    1.3 to 8-9 s per step). An explicit OMP_NUM_THREADS wins. Returns a line for the banner."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("OMP_NUM_THREADS"):
        return f"{torch.get_num_threads()} torch threads (OMP_NUM_THREADS), {cores} cores available"
    threads = max(1, cores // max(1, local_processes))
    torch.set_num_threads(threads)
    return f"{threads} torch threads ({cores} cores available, {local_processes} process(es) on this machine)"


def make_accelerator(cfg: TrainConfig, run: RunFolder, precision: Precision) -> Accelerator:
    """DDP runs without `find_unused_parameters` (a walk of the autograd graph on every step): every
    family freezes the parameters its forward never uses (`SegModel.never_used`), and all four are
    tested under two processes (tests/test_distributed.py)."""
    if cfg.tracker != "none" and importlib.util.find_spec(cfg.tracker) is None:
        raise ValueError(f"train.tracker: {cfg.tracker} is not installed. `pip install {cfg.tracker}`, "
                         "or set train.tracker to tensorboard or none.")
    on_cpu = not torch.cuda.is_available()
    return Accelerator(
        cpu=on_cpu,  # without it, `accelerate launch --multi_gpu` on CPU starts independent processes
        mixed_precision=precision.name,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=str(run.root),
        step_scheduler_with_optimizer=False,  # we step it once per optimizer step, on every process count
        # host-to-device copies of the (pinned, on CUDA) batches overlap the step before them
        dataloader_config=DataLoaderConfiguration(non_blocking=not on_cpu),
    )


def prepare_run(run: RunFolder, resume: bool, overwrite: bool) -> None:
    """`RunFolder.prepare` on the main process only, the others waiting behind a barrier: on every
    process, `--overwrite` would delete the folder several times over, and the checks would race
    with the main process's first writes. A refusal is raised on every process, so none is left
    waiting at the next collective."""
    state = PartialState(cpu=not torch.cuda.is_available())  # the process group Accelerator reuses
    problem = [None]
    if state.is_main_process:
        try:
            run.prepare(resume, overwrite, is_main=True)
        except RunFolderError as e:
            problem = [str(e)]
    if state.num_processes > 1:
        problem = broadcast_object_list(problem)  # also the barrier: the folder is ready when it returns
    if problem[0] is not None:
        raise RunFolderError(problem[0])


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each optimizer step.

    Under several processes a signal may reach one of them only, or each at a different step; a
    process that stopped on its own would wait at the checkpoint's barrier while the others wait
    in the gradient all-reduce, for ever. `agreed` shares the flag (accelerate's trigger, one
    small all-reduce per step), so every process stops after the same step.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False
        """True once every process has agreed to stop after the current step."""
        self._shared = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nsegkit: got {signal.Signals(signum).name}; saving a checkpoint after this step...", flush=True)

    def agreed(self, accelerator: Accelerator) -> bool:
        """Whether to stop after this step: the same answer on every process. Call it on every
        process after every optimizer step."""
        if accelerator.num_processes == 1:
            self.stopping = self.stopping or self.signum is not None
            return self.stopping
        if self.signum is not None and not self._shared:
            accelerator.set_trigger()
            self._shared = True
        if accelerator.check_trigger():  # a collective: True on all once any process set it
            self.stopping = True
        return self.stopping

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def choose_precision(cfg: TrainConfig, model: torch.nn.Module, crop: tuple[int, int]) -> Precision:
    """`train.mixed_precision` for this run (segkit.precision): on a CPU with native bf16, `auto`
    times the model's own training step at the recipe's crop in fp32 and bf16. Under several
    processes the main one measures alone and every process takes its answer: processes that ran
    in different precisions would disagree in every all-reduce."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.mixed_precision != "auto" or device != "cpu":
        return resolve(cfg.mixed_precision, device)  # nothing to measure; every process decides alike
    batch = min(cfg.batch_size, 8)  # the recipe's (up to 8): small batches run other kernels, bf16's gain grows
    if is_initialized():  # a second run in this process (a notebook, a test): accelerate fixes the precision once
        name = AcceleratorState().mixed_precision
        speedup = cached_speedup(model, crop, batch, True, default_cache()) if name == "bf16" else 1.0
        return Precision(name, f"auto: {'fp32' if name == 'no' else name}, as this process's first run chose it "
                               "(accelerate keeps one precision per process)", speedup)
    state = PartialState(cpu=True)
    chosen = [None]
    if state.is_main_process:
        probe = step_probe(model, crop, batch=batch, backward=True, cache=default_cache())
        chosen = [resolve(cfg.mixed_precision, device, probe)]
    if state.num_processes > 1:
        chosen = broadcast_object_list(chosen)
    return chosen[0]
