"""The processes of one `accelerate launch`, and how they end: together, and without tearing the
process group down.

Training, `segkit evaluate` and `segkit predict` each run on every process of a launch. Freeing a
gloo process group can deadlock (seen in 1 of about 30 two-process CPU runs here, torch 2.13): the
thread that frees it holds the GIL and joins gloo's worker thread, which is still destroying an
earlier collective's work and waits for the GIL to release that work's Python tensors. It happens
wherever the group is freed: in `destroy_process_group`, when DDP's reducer lets go of it, or at
interpreter exit. So segkit never frees it: the group lives as long as the process, and a launched
`segkit` command leaves through `os._exit` once every file is written and closed.
"""

from __future__ import annotations

import logging
import os
import sys

from accelerate import Accelerator


def end_processes(accelerator: Accelerator) -> None:
    """Wait for every process and close the trackers. Call it once, last, on every process. Unlike
    `Accelerator.end_training` it keeps the process group (see the module's docstring)."""
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:
        tracker.finish()


def leave(code: int) -> int:
    """`code` for a plain process. A process of a launch exits here, with `code`, after flushing
    its output: the interpreter's own exit would free the process group (module docstring)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
