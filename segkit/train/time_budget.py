"""A run that ends on the clock: `train.time_budget` turned into a plan of steps, kept up to date.

As Ultralytics' `time`: the seconds per optimizer step are measured over the first steps (after
`PROBE_SKIP` warm-up steps: workers starting, the allocator growing), then the plan is the number
of steps that fit in what is left of the budget once the evaluations, their checkpoints and the
final report are paid for. The evaluation cadence is laid over the planned steps
(`train.budget_evals` evaluations, fewer where they would take more than `EVAL_SHARE` of the
budget, unless `train.eval_every` fixes it). Each evaluation is timed,
and the plan is made again from the rate of the recent steps, after each evaluation and, between
them, ever more often towards the end: a machine that slows down (or a first guess of the
evaluation's cost that was wrong) shortens the run instead of overrunning it, and one that
speeds up uses the time. A last guard stops the loop when the next step would not leave time
for the end.

The learning rate reads the plan through `Plan.progress(step)`, a piecewise-linear map from steps
to [0, 1]. A new plan is anchored at the current step and progress, so the learning rate never
jumps when the planned length changes; only its slope does. The plan travels in every checkpoint
(`TrainerState.plan`): a resumed run continues the same schedule and spends what was left.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from segkit.data.source import SPLITS
from segkit.evaluation.per_image import WORST_PER_CLASS
from segkit.run_folder import write_json

if TYPE_CHECKING:
    from accelerate import Accelerator

    from segkit.config.sections import TrainConfig
    from segkit.data.dataset import DataBundle
    from segkit.precision import Precision
    from segkit.train.trainer import Trainer

PROBE_SKIP = 2
"""Steps left out of the first measurement (worker start-up, allocator warm-up)."""
PROBE_STEPS = 5
"""Steps timed for the first plan."""
WINDOW = 30
"""Recent steps whose mean time is the rate a re-plan assumes."""
PROVISIONAL_TOTAL = 10**6
"""The plan's length before the first measurement: progress stays near 0 (a warmup has barely
begun, a decay has not), so anchoring the first real plan there changes no learning rate."""
EVAL_SHARE = 0.1
"""Most of the budget that evaluations during training may take (the final report aside): with
8 s per evaluation, a 2-minute budget evaluates once, at the end, and 10 minutes four times."""
REPORT_S = 0.5
"""Seconds the final report costs beyond scoring (files, overlays, the HTML page), a floor."""


@dataclass
class Plan:
    """What the budget has become; saved in checkpoints, read by the LR schedule."""

    budget_s: float
    total: int = PROVISIONAL_TOTAL
    """Planned optimizer steps (provisional until `plans` > 0)."""
    eval_every: int = 0
    """Steps between evaluations; 0 before the first plan (no evaluation yet)."""
    anchor_step: int = 0
    anchor_progress: float = 0.0
    step_s: float = 0.0
    """Measured seconds per optimizer step, training only."""
    eval_s: float = 0.0
    """Measured seconds per evaluation and its checkpoint; 0 until one happened."""
    spent_s: float = 0.0
    """Seconds of the budget spent when the checkpoint holding this plan was written."""
    plans: int = 0

    def progress(self, step: int) -> float:
        """Share of the schedule done at `step`, continuous across re-plans."""
        span = max(1, self.total - self.anchor_step)
        return min(1.0, max(0.0, self.anchor_progress + (1.0 - self.anchor_progress) * (step - self.anchor_step) / span))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def human_seconds(seconds: float) -> str:
    """72 -> '1m12s', 5400 -> '1h30m', 20 -> '20s'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class BudgetClock:
    """Measures the run and keeps its plan inside the budget.

    `after_step` is called after every optimizer step with the seconds its evaluation took, if
    any; it returns a line for the log whenever it made a plan. `out_of_time` is the last guard.
    """

    def __init__(self, plan: Plan, started: float, *, max_steps: int | None, eval_every: int, budget_evals: int,
                 val_images: int, final_images: int, batch_images: int, start_step: int, text: str,
                 report_slowdown: float = 1.0) -> None:
        self.plan = plan
        self.deadline = started + plan.budget_s - plan.spent_s
        self.started = started
        self.max_steps, self.fixed_every, self.budget_evals = max_steps, eval_every, budget_evals
        self.val_images, self.final_images, self.batch_images = val_images, final_images, batch_images
        self.start_step, self.text = start_step, text
        self.report_slowdown = report_slowdown
        """The final report scores in fp32: this many times slower per image than the evaluations
        made under the training's autocast (segkit.precision's measured speed-up)."""
        self.last = time.perf_counter()
        self.window: deque[float] = deque(maxlen=WINDOW)
        """Training seconds of the recent steps: the rate the plan assumes."""
        self.planned_at = start_step
        self.eval_per_image = 0.0
        self.last_eval = start_step
        """The step of the last evaluation: the cadence counts from it, so a new cadence never
        brings the next evaluation closer than `eval_every` steps."""

    # -- bookkeeping -----------------------------------------------------------------------------
    def spent(self) -> float:
        """Seconds of the budget spent so far (for the checkpoint)."""
        return self.plan.budget_s - (self.deadline - time.perf_counter())

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def after_step(self, step: int, eval_s: float | None = None, eval_only_s: float | None = None) -> str | None:
        now = time.perf_counter()
        busy = now - self.last - (eval_s or 0.0)
        self.last = now
        if step - self.start_step > PROBE_SKIP:
            self.window.append(busy)
        if eval_s is not None:
            self.last_eval = step
            self.plan.eval_s = eval_s if not self.plan.eval_s else 0.5 * (self.plan.eval_s + eval_s)
            if eval_only_s is not None and self.val_images:
                self.eval_per_image = eval_only_s / self.val_images
        if self.plan.plans == 0:
            due = len(self.window) >= PROBE_STEPS
        else:  # after each evaluation, and ever more often towards the end, where a drift costs the most
            due = eval_s is not None or step - self.planned_at >= max(PROBE_STEPS, (self.plan.total - step) // 8)
        if not due:
            return None
        if self.window:
            self.plan.step_s = sum(self.window) / len(self.window)
        self.planned_at = step
        return self.replan(step)

    def start_evaluated(self, seconds: float) -> None:
        """The evaluation before step 1 took `seconds`: the first plan's cost per val image, instead
        of a guess from the training rate."""
        if self.val_images:
            self.eval_per_image = seconds / self.val_images

    # -- the plan --------------------------------------------------------------------------------
    def per_eval(self) -> float:
        """An evaluation and its checkpoint: measured; else from the evaluation before step 1;
        else guessed from the training rate (one forward at full size is about a training step's
        time per image)."""
        if self.plan.eval_s:
            return self.plan.eval_s
        if self.eval_per_image:
            return self.eval_per_image * self.val_images + 0.2
        return self.plan.step_s / max(1, self.batch_images) * self.val_images + 0.2

    def final_cost(self) -> float:
        """The end of the run after the last step: finish() scores val and test (and calibrates)."""
        per_image = self.eval_per_image or self.per_eval() / max(1, self.val_images)
        return per_image * self.report_slowdown * self.final_images + REPORT_S

    def _cost(self, step: int, n: int, every: int) -> float:
        since = step - self.last_eval + n
        evals = since // every + (1 if since % every else 0)  # + the one at the end of fit
        return n * self.plan.step_s + evals * self.per_eval()

    def evals(self) -> int:
        """Evaluations over the run, the one at the end included: `budget_evals`, fewer when they
        would take more than `EVAL_SHARE` of the budget (a 2-minute budget trains instead)."""
        return max(1, min(self.budget_evals, int(EVAL_SHARE * self.plan.budget_s / max(self.per_eval(), 1e-6))))

    def _every(self, total: int) -> int:
        return self.fixed_every or max(1, math.ceil(total / self.evals()))

    def replan(self, step: int) -> str:
        p = self.plan
        avail = self.left() - self.final_cost()
        total = p.total if p.plans else step + max(1, int(avail / max(p.step_s, 1e-6)))
        n = 0
        for _ in range(4):  # the cadence depends on the length and the length on the cadence
            every = self._every(total)
            n = max(0, int(avail / (p.step_s + self.per_eval() / every)))
            while n > 0 and self._cost(step, n, every) > avail:
                n -= max(1, n // 100)
            total = step + n
        if self.max_steps:
            total = min(total, self.max_steps)
        p.anchor_progress, p.anchor_step = p.progress(step), step
        p.total, p.eval_every, p.plans = max(total, step), self._every(max(total, step)), p.plans + 1
        rate = self.batch_images / max(p.step_s, 1e-9)
        return (f"budget {self.text}: ~{p.total} steps at {rate:.1f} img/s, eval every {p.eval_every} steps "
                f"(~{self.per_eval():.1f}s each), {human_seconds(self.final_cost())} for the final report; "
                f"{human_seconds(self.left())} left" + ("" if p.plans == 1 else f" (re-plan {p.plans - 1})"))

    def evaluates(self, step: int) -> bool:
        """Whether to evaluate after `step`: `eval_every` steps after the last evaluation, unless
        the plan ends within half of that (the evaluation at the end comes soon enough)."""
        every = self.plan.eval_every
        return every > 0 and step - self.last_eval >= every and self.plan.total - step >= every // 2

    def out_of_time(self) -> bool:
        """The last guard: the next step would leave too little for the end of the run."""
        if self.plan.plans == 0:
            return self.left() < self.final_cost() + self.per_eval()
        return self.left() < self.plan.step_s + self.per_eval() + self.final_cost()


def budget_clock(plan: Plan, cfg: TrainConfig, data: DataBundle, accelerator: Accelerator, step: int,
                 precision: Precision) -> BudgetClock:
    """The budget's clock; `train` sets its start. The final report scores val and test, then
    segments its worst images (`WORST_PER_CLASS` per class) and its overlays one by one; a
    calibration scores val once more (its fit's sample; under a budget it skips the test figure
    before, segkit.train.calibrate)."""
    sizes = {s: len(getattr(data, s)) for s in SPLITS if s != "train" and getattr(data, s) is not None}
    headline = sizes.get("test", sizes.get("val", 0))
    pictures = min(headline, WORST_PER_CLASS * data.labels.num_classes) + min(headline, cfg.num_overlays)
    final = sum(sizes.values()) + pictures + (sizes.get("val", 0) if cfg.calibrate is not False else 0)
    return BudgetClock(plan, time.perf_counter(), max_steps=cfg.max_steps, eval_every=cfg.eval_every,
                       budget_evals=cfg.budget_evals, val_images=sizes.get("val", 0), final_images=final,
                       batch_images=cfg.batch_size * accelerator.num_processes * cfg.grad_accum, start_step=step,
                       text=str(cfg.time_budget), report_slowdown=precision.speedup)


def follow_budget(t: Trainer, bar: tqdm, eval_s: float | None, eval_only_s: float) -> bool:
    """Measure the step, (re-)plan when due, and say whether the clock ends the run now. Every
    process follows the main one's plan: plans made from each one's clock could differ by a step."""
    clock, acc = t.budget, t.accelerator
    line = clock.after_step(t.state.step, eval_s, eval_only_s if eval_s is not None else None)
    late = clock.out_of_time()
    if acc.num_processes > 1:
        shared = broadcast_object_list([(clock.plan.to_dict(), late)])
        clock.plan.__dict__.update(shared[0][0])
        late = shared[0][1]
    if late:  # the plan ends here: the loop's and the schedule's length
        clock.plan.total = t.state.step
    t.total_steps = clock.plan.total
    bar.total = t.total_steps
    if line and acc.is_main_process:
        if clock.plan.plans == 1 or eval_s is not None:  # the banner's plan, and each evaluation's re-plan
            tqdm.write(line)
        t.run.log({"step": t.state.step, "event": "plan", **clock.plan.to_dict()})
    if late and acc.is_main_process:
        tqdm.write(f"budget {clock.text}: stopping at step {t.state.step}, the time left is for the final report")
    return late


def record_elapsed(t: Trainer) -> float:
    """The run's wall time, set-up to final report, in metrics.json and train_log.jsonl (a time
    budget is judged on it)."""
    elapsed = time.perf_counter() - t.started
    if t.accelerator.is_main_process:
        budget = None if t.budget is None else {"seconds": t.budget.plan.budget_s, "planned_steps": t.budget.plan.total,
                                                "plans": t.budget.plan.plans}
        if t.run.metrics.is_file():
            metrics = json.loads(t.run.metrics.read_text())
            write_json(t.run.metrics, {**metrics, "elapsed_s": round(elapsed, 3), "time_budget": budget})
        t.run.log({"step": t.state.step, "event": "finished", "elapsed_s": round(elapsed, 3), "time_budget": budget})
        if budget is not None:
            print(f"budget {t.cfg.time_budget}: {t.state.step} steps, finished in {elapsed:.1f}s "
                  f"({100 * elapsed / budget['seconds']:.1f}% of the budget)")
    return elapsed
