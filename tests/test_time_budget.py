"""`train.time_budget`: a real tiny run ends on the clock, the plan is printed and checkpointed,
the schedule follows re-plans without a jump, and the settings are checked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from segkit.cli import main as cli
from segkit.config.checks import parse_duration
from segkit.config.recipe import RecipeError, recipe_from_dict
from segkit.train.optim import planned_factor
from segkit.train.time_budget import BudgetClock, Plan
from tests.test_train import TINY, write_recipe

BUDGET_S = 30.0
"""Long enough that 3% of it (0.9 s) is above the tiny model's final report varying from run to run
(0.3-0.8 s on 2 cores, with nothing else running)."""


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_a_30s_budget_ends_within_3_percent_and_says_its_plan(tmp_path: Path, capsys):
    recipe = write_recipe(tmp_path, train={"epochs": 1, "warmup_steps": 0, "warmup_ratio": 0.1,
                                           "time_budget": f"{BUDGET_S:g}s", "tracker": "none"})
    import transformers.models.segformer  # noqa: F401

    import segkit.train.loop  # noqa: F401  interpreter start-up (imports) is not the run's time

    started = time.perf_counter()
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "out")]) == 0
    wall = time.perf_counter() - started
    out = capsys.readouterr().out
    run = tmp_path / "out"
    metrics = json.loads((run / "metrics.json").read_text())
    elapsed = metrics["elapsed_s"]
    # the trainer's own clock, set-up to final report, against the budget: a loaded CPU slows the
    # steps, and the plan follows it
    assert abs(elapsed - BUDGET_S) <= 0.03 * BUDGET_S, elapsed
    assert wall - elapsed < 1.5  # what the trainer's clock leaves out (parsing the recipe) is small
    assert f"budget {BUDGET_S:g}s: ~" in out and " img/s, eval every " in out and "s each)" in out
    records = _records(run)
    plans = [r for r in records if r.get("event") == "plan"]
    assert plans and plans[0]["step"] == 7 and metrics["time_budget"]["planned_steps"] == metrics["steps"]
    finished = next(r for r in records if r.get("event") == "finished")
    assert finished["elapsed_s"] == pytest.approx(elapsed, abs=0.01)
    lrs = [r["lr"] for r in records if "lr" in r]
    peak = 0.003
    warmup = 0.1 * plans[0]["total"]  # warmup_ratio 0.1 of the first plan; each step adds peak / warmup
    assert max(abs(a - b) for a, b in zip(lrs, lrs[1:])) < 2.5 * peak / warmup  # re-plans: no jump
    assert max(lrs) > 0.8 * peak and lrs[-1] < 0.1 * peak  # warmed up, and decayed over the plan's length
    evals = [r["step"] for r in records if "eval" in r]
    assert len(evals) >= 3 and min(b - a for a, b in zip(evals, evals[1:])) >= 0.5 * plans[0]["eval_every"]
    state = json.loads((sorted((run / "checkpoints").glob("step-*"))[-1] / "trainer_state.json").read_text())
    assert state["plan"]["total"] == metrics["steps"] and 0 < state["plan"]["spent_s"] < BUDGET_S


def test_replanned_schedule_is_continuous_and_resumes_exactly():
    """A LambdaLR over a Plan: the length changes mid-run without a jump in lr, and a scheduler
    rebuilt from the checkpointed plan and state continues with the same learning rates."""
    def scheduler(plan: Plan) -> torch.optim.lr_scheduler.LambdaLR:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return torch.optim.lr_scheduler.LambdaLR(opt, planned_factor("poly", 0.1, plan))

    plan = Plan(budget_s=60, total=100, plans=1)
    sched, lrs = scheduler(plan), []
    for step in range(1, 61):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
        if step == 40:  # the machine slowed down: 70 steps instead of 100
            plan.anchor_progress, plan.anchor_step, plan.total = plan.progress(step), step, 70
            saved_plan, saved_state = plan.to_dict(), sched.state_dict()
    assert max(abs(a - b) for a, b in zip(lrs[10:], lrs[11:])) < 0.05  # after the warmup: slopes, no jump
    progress = saved_plan["anchor_progress"] + (1 - saved_plan["anchor_progress"]) * (60 - 40) / (70 - 40)
    assert lrs[-1] == pytest.approx((1 - (progress - 0.1) / 0.9) ** 0.9)  # the decay now ends at step 70
    restored = Plan(budget_s=0)
    restored.__dict__.update(saved_plan)
    again = scheduler(restored)
    again.load_state_dict(saved_state)
    resumed = []
    for _ in range(20):
        again.step()
        resumed.append(again.get_last_lr()[0])
    assert resumed == lrs[40:]


def test_plan_fits_the_time_left_and_max_steps_caps_it():
    plan = Plan(budget_s=100)
    clock = BudgetClock(plan, time.perf_counter(), max_steps=None, eval_every=0, budget_evals=4, val_images=10,
                        final_images=20, batch_images=4, start_step=0, text="100s")
    plan.step_s, plan.eval_s, clock.eval_per_image = 0.1, 1.0, 0.1
    clock.replan(7)
    cost = clock._cost(7, plan.total - 7, plan.eval_every) + clock.final_cost()
    assert cost <= clock.left() and cost > 0.97 * clock.left()  # the budget is spent, not exceeded
    assert plan.eval_every == -(-plan.total // 4)
    capped = BudgetClock(Plan(budget_s=100), time.perf_counter(), max_steps=50, eval_every=0, budget_evals=4,
                         val_images=10, final_images=20, batch_images=4, start_step=0, text="100s")
    capped.plan.step_s = 0.1
    capped.replan(7)
    assert capped.plan.total == 50


def test_a_short_budget_spends_at_most_a_tenth_on_evaluations():
    """Four evaluations of 8.5 s would take a quarter of 2 minutes: the plan keeps the one at the
    end. Ten minutes affords the four asked for."""
    for budget, evals in ((120, 1), (300, 3), (600, 4)):
        clock = BudgetClock(Plan(budget_s=budget), time.perf_counter(), max_steps=None, eval_every=0, budget_evals=4,
                            val_images=100, final_images=300, batch_images=8, start_step=0, text=f"{budget}s")
        clock.plan.step_s, clock.plan.eval_s = 0.8, 8.5
        clock.replan(7)
        assert clock.evals() == evals and clock.plan.eval_every == -(-clock.plan.total // evals)
        in_loop = []
        for step in range(8, clock.plan.total):
            if clock.evaluates(step):
                in_loop.append(step)
                clock.last_eval = step
        assert len(in_loop) == evals - 1  # and the one at the end of fit


def test_the_evaluation_before_step_1_prices_the_first_plan():
    """A first plan made before any evaluation in the loop: the step-0 evaluation's time, not a
    guess from the training rate, prices the evaluations and the final report."""
    clock = BudgetClock(Plan(budget_s=100), time.perf_counter(), max_steps=None, eval_every=0, budget_evals=4,
                        val_images=10, final_images=20, batch_images=4, start_step=0, text="100s",
                        report_slowdown=2.0)
    clock.plan.step_s = 0.1
    assert clock.per_eval() == pytest.approx(0.1 / 4 * 10 + 0.2)  # the guess
    clock.start_evaluated(5.0)
    assert clock.per_eval() == pytest.approx(5.2)
    assert clock.final_cost() == pytest.approx(0.5 * 2.0 * 20 + 0.5)


def test_a_recipes_warmup_in_steps_ramps_the_planned_schedule_without_jumps():
    """`--set train.time_budget=10m` on a recipe written with warmup_steps: the ramp multiplies the
    planned decay, so the rate rises for warmup_steps steps and never jumps when the plan changes."""
    from segkit.train.optim import planned_factor

    plan = Plan(budget_s=100)
    factor = planned_factor("poly", 0.0, plan, warmup_steps=10)
    before = [factor(s) for s in range(8)]
    plan.anchor_progress, plan.anchor_step, plan.total, plan.plans = plan.progress(7), 7, 100, 1
    after = [factor(s) for s in range(7, 100)]
    assert before == sorted(before) and before[0] == pytest.approx(0.1, rel=1e-3)
    assert after[0] == pytest.approx(before[7], rel=1e-4)  # re-planning changed no rate
    assert max(after) == pytest.approx(factor(9)) and after[-1] < 0.05
    steps = [abs(a - b) for a, b in zip(after, after[1:])]
    assert max(steps) < 0.11


def test_durations_and_settings_are_checked():
    assert [parse_duration(v) for v in ("90s", "10m", "1.5h", "2h30m", 45)] == [90, 600, 5400, 9000, 45]
    values = json.loads(json.dumps(TINY))
    values["train"].update(time_budget="ten minutes", ema_decay=1.5)
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(values)
    message = str(e.value)
    assert "train.time_budget: 'ten minutes' is not a duration" in message
    assert "warmup_steps" not in message  # a recipe's own warmup (TINY's 2 steps) runs on a budget too
    assert "train.ema_decay: 1.5 is out of range" in message
    values = json.loads(json.dumps(TINY))
    values["model"] = {"family": "maskformer", "size": "tiny"}
    values["train"]["calibrate"] = True
    with pytest.raises(RecipeError, match="train.calibrate: maskformer scores pixels with query probabilities"):
        recipe_from_dict(values)
