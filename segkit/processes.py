"""The processes of one `accelerate launch`, and how they end: together.

Training, `segkit evaluate` and `segkit predict` each run on every process of a launch. torch's
`destroy_process_group` can hang when one process tears the group down while another is still
writing the report behind it (pytorch#75097); a barrier first makes every process leave at once.
"""

from __future__ import annotations

from accelerate import Accelerator


def end_processes(accelerator: Accelerator) -> None:
    """Wait for every process, then close the trackers and the process group. Call it once, last,
    on every process (a single process only closes its trackers)."""
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
    accelerator.end_training()
