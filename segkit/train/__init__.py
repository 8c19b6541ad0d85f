"""Training: loop.py (setup -> fit -> finish) over optim.py (AdamW, warmup then decay),
losses.py (segkit's pixel losses, class weights), checkpoint.py (atomic, exactly resumable) and
runtime.py (the accelerate Accelerator, precision, threads, Ctrl-C).
"""
