"""Training: loop.py (setup -> fit -> finish) over a Trainer (trainer.py), with banner.py (what is
about to run), head_start.py (a classifier from the checkpoint's rows), optim.py (AdamW, warmup
then decay), losses.py (segkit's pixel losses) with class_weights.py, time_budget.py (minutes, not
steps), ema.py, calibrate.py (per-class offsets fitted on val), saving.py and checkpoint.py
(atomic, exactly resumable), faults.py, guard.py, space.py and lost_workers.py (what a run
survives), runtime.py (the accelerate Accelerator, threads, Ctrl-C).
"""
