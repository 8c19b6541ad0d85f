"""Several processes through `accelerate launch` on CPU: same figures as one process.

accelerate pads uneven shards by repeating samples; segkit scores each process's own share and
sums confusion matrices, so nothing is counted twice. The test split here has an odd size.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_train import write_recipe

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "segkit.cli"]
ONE = [sys.executable, "-m", "segkit.cli"]


def launch(cmd: list[str], timeout: float = 300, port: str = "29518") -> subprocess.CompletedProcess:
    """Run `cmd`; if it hangs, every Python process under it prints its threads' stacks
    (faulthandler, on SIGABRT) and the test fails with them: a hang says where it hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": port, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import psutil

        launcher = psutil.Process(proc.pid)
        # the ranks (and any loader workers); a launcher itself would only report the wait
        launched = "accelerate.commands.launch" in cmd
        for process in launcher.children(recursive=True) + ([] if launched else [launcher]):
            process.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        pytest.fail(f"hung for {timeout:.0f}s: {' '.join(cmd[-6:])}\n{out[-3000:]}\n{err[-12000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run(cmd: list[str]) -> str:
    proc = launch(cmd, timeout=600, port="29517")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def scores(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"strict": metrics["strict"], "foreground": metrics["foreground"], "per_class": metrics["per_class"]}


@pytest.mark.slow
def test_two_processes_train_and_score_like_one(tmp_path: Path):
    recipe = write_recipe(tmp_path, data={"synthetic_samples": 28},  # 7 test images: uneven shards
                          train={"max_steps": 6, "eval_every": 3, "batch_size": 2})
    out = tmp_path / "two"
    stdout = run(LAUNCH + ["train", str(recipe), "--output-dir", str(out)])
    assert "2 processes" in stdout
    assert (out / "model" / "model.safetensors").is_file() and (out / "overlays").is_dir()

    run(ONE + ["evaluate", str(out), "--split", "test", "--output", str(tmp_path / "one-eval")])
    run(LAUNCH + ["evaluate", str(out), "--split", "test", "--output", str(tmp_path / "two-eval")])
    trained = scores(out)
    assert scores(tmp_path / "one-eval") == trained
    assert scores(tmp_path / "two-eval") == trained
    # per-image rows are gathered from both processes: every image once, in order, as one process scores it
    one_rows = (tmp_path / "one-eval" / "per_image.csv").read_text()
    assert (tmp_path / "two-eval" / "per_image.csv").read_text() == one_rows
    assert [line.split(",")[0] for line in one_rows.splitlines()[1:]] == [str(i) for i in range(7)]
    total = sum(c["gt_pixels"] for c in trained["per_class"].values())
    assert total == json.loads((out / "metrics.json").read_text())["num_pixels"] > 0


@pytest.mark.slow
def test_two_processes_share_a_folder_to_predict(finished_run: Path, tmp_path: Path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for k in range(5):
        Image.new("RGB", (40 + 8 * k, 48), (30 * k, 90, 160)).save(images / f"{k}.png")
    run(ONE + ["predict", str(finished_run), str(images), "--output", str(tmp_path / "one"), "--workers", "0"])
    run(LAUNCH + ["predict", str(finished_run), str(images), "--output", str(tmp_path / "two"), "--workers", "0"])
    read = lambda folder: sorted((folder / "areas.csv").read_text().splitlines())  # noqa: E731
    assert read(tmp_path / "two") == read(tmp_path / "one") and len(read(tmp_path / "one")) == 6
    assert not list((tmp_path / "two").glob("areas.*.csv"))  # the processes' parts were merged
    for k in range(5):
        with Image.open(tmp_path / "one" / "masks" / f"{k}.png") as a, Image.open(tmp_path / "two" / "masks" / f"{k}.png") as b:
            assert a.tobytes() == b.tobytes()


FAMILIES = {"maskformer": {"family": "maskformer"}, "mask2former": {"family": "mask2former"},
            "vit-multilevel": {"family": "vit", "head": "multilevel"},
            "vit-linear": {"family": "vit", "head": "linear"}}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_on_two_processes_with_overwrite(tmp_path: Path, name: str):
    """Two steps of each family under the README's command, without find_unused_parameters: DINOv2's
    mask_token and the Swin backbones' final layernorm are frozen, so DDP finds a gradient for every
    trainable parameter. `--overwrite` replaces an earlier run once (rank 0, behind a barrier)."""
    recipe = write_recipe(tmp_path, model={**FAMILIES[name], "size": "tiny"}, data={"synthetic_samples": 12},
                          train={"max_steps": 2, "eval_every": 0, "batch_size": 2, "tracker": "none",
                                 "num_overlays": 0})
    out = tmp_path / "out"
    (out / "checkpoints" / "step-0000099").mkdir(parents=True)
    (out / "recipe.yaml").write_text("an earlier run\n")
    proc = launch(LAUNCH + ["train", str(recipe), "--output-dir", str(out), "--overwrite"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000002"]
    assert (out / "model" / "model.safetensors").is_file() and "2 processes" in proc.stdout


def test_set_loss_is_the_same_on_one_and_two_processes(tmp_path: Path):
    """MaskFormer's and Mask2Former's loss on one global batch of 4 images: one process, and two
    processes with 2 images each (the images hold different numbers of masks)."""
    from tests.set_loss_worker import losses

    one = losses(0, 1)
    proc = launch(LAUNCH[:-2] + [str(Path(__file__).with_name("set_loss_worker.py")), str(tmp_path / "two.json")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two.keys() == one.keys() == {"maskformer", "mask2former"}
    for family in one:
        assert two[family] == pytest.approx(one[family], rel=1e-5), family


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_after_the_same_step(tmp_path: Path):
    """The signal reaches rank 1 only; rank 0 learns it through the shared trigger. Both stop after
    the same step, one checkpoint is written, each process exits 130, and nothing hangs."""
    import psutil

    recipe = write_recipe(tmp_path, data={"synthetic_samples": 12},
                          train={"max_steps": 5000, "eval_every": 1000, "batch_size": 2, "tracker": "none",
                                 "checkpoint_every": 0})
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29519"}
    proc = subprocess.Popen(LAUNCH + ["train", str(recipe), "--output-dir", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "train_log.jsonl").is_file() or (out / "train_log.jsonl").read_text().count('"loss"') < 2:
            assert proc.poll() is None and time.time() < deadline, "training did not start"
            time.sleep(0.1)
        ranks = {c.environ().get("RANK"): c for c in psutil.Process(proc.pid).children(recursive=True)
                 if "RANK" in c.environ()}
        ranks["1"].send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    stopped = re.findall(r"Interrupted at step (\d+)", output)
    assert len(stopped) == 2 and len(set(stopped)) == 1, output[-3000:]  # both processes, the same step
    step = int(stopped[0])
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{step:07d}"]
    assert json.loads((out / "checkpoints" / f"step-{step:07d}" / "trainer_state.json").read_text())["step"] == step
    # torchrun reports a worker's non-zero exit as a failure of the launch (and exits 1 itself)
    assert re.search(r"exitcode\s*: 130", output), output[-3000:]
    assert not re.search(r'File ".*segkit/', output), output[-3000:]  # no traceback from segkit itself


@pytest.mark.slow
def test_resume_from_two_processes_on_one(tmp_path: Path):
    """A checkpoint of 2 processes x batch 2 resumed on one process: refused with batch 2 (the steps
    would count other samples), exact in global samples with batch 4."""
    recipe = write_recipe(tmp_path, data={"synthetic_samples": 24},
                          train={"max_steps": 4, "checkpoint_every": 1, "eval_every": 0, "batch_size": 2,
                                 "tracker": "none", "num_overlays": 0, "keep_last": 10})
    out = tmp_path / "out"
    proc = launch(LAUNCH + ["train", str(recipe), "--output-dir", str(out), "--set", "train.max_steps=2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = json.loads((out / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
    assert (saved["world_size"], saved["batches_in_epoch"], saved["samples_in_epoch"]) == (2, 2, 8)

    refused = launch(ONE + ["train", str(recipe), "--output-dir", str(out), "--resume"])
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "--set train.batch_size=4" in refused.stdout + refused.stderr

    resumed = launch(ONE + ["train", str(recipe), "--output-dir", str(out), "--resume", "--set", "train.batch_size=4"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed on 1 process(es) from 2: 8 samples into epoch 0" in resumed.stdout
    state = json.loads((out / "checkpoints" / "step-0000003" / "trainer_state.json").read_text())
    layout = (state["world_size"], state["batch_size"], state["batches_in_epoch"], state["samples_in_epoch"])
    assert layout == (1, 4, 3, 12)


def test_a_launched_process_leaves_with_its_code_and_its_output(tmp_path: Path):
    """`leave` returns the code in a plain process; in one with a process group (a gloo group of one,
    after a collective) it exits with the code at once, output flushed, the group never freed."""
    from segkit.processes import leave

    assert leave(3) == 3
    code = ("import sys, torch, torch.distributed as dist\n"
            f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)\n"
            "dist.all_gather_object([None], {'rows': [1, 2]}); dist.barrier()\n"
            "from segkit.processes import leave\n"
            "print('written', end=''); print('to stderr', file=sys.stderr, end='')\n"
            "leave(7); print('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "written", "to stderr")


@pytest.mark.slow
def test_two_processes_list_every_unreadable_sample_as_one_process_does(tmp_path: Path):
    """Broken image bytes in a training split: each process meets those in its own share of the
    batches. Two processes of batch 2 draw the same samples per step as one of batch 4, so both
    runs list the same (step, epoch, index) rows, and count them alike."""
    from tests.faults.test_bad_samples import recipe, skipped_rows, stream_with_broken_rows

    hub = stream_with_broken_rows(tmp_path / "hub")
    one, two = tmp_path / "one", tmp_path / "two"
    run(ONE + ["train", str(recipe(tmp_path, hub, max_skipped=100, batch_size=4)), "--output-dir", str(one)])
    run(LAUNCH + ["train", str(recipe(tmp_path, hub, max_skipped=100, batch_size=2)), "--output-dir", str(two)])

    def where(run: Path) -> list[tuple[str, str, str]]:
        return sorted((r["step"], r["epoch"], r["index"]) for r in skipped_rows(run))

    listed = where(one)
    assert {index for _, _, index in listed} == {"3", "9"}  # 10 steps of 4 read the 16 rows 2.5 times
    assert where(two) == listed
    for folder in (one, two):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["skipped_samples"] == len(listed)
        assert json.loads((folder / "checkpoints/step-0000010/trainer_state.json").read_text())["skipped"] == len(listed)


@pytest.mark.slow
def test_a_process_whose_batch_is_all_unreadable_steps_with_the_others(tmp_path: Path):
    """One image per process: each broken row leaves one process a batch of nothing. It steps on
    its last readable batch at weight 0, so the other is not left in the all-reduce, and the run
    trains its 10 steps and lists what one process of batch 2 lists."""
    from tests.faults.test_bad_samples import recipe, skipped_rows, stream_with_broken_rows

    hub = stream_with_broken_rows(tmp_path / "hub")
    one, two = tmp_path / "one", tmp_path / "two"
    run(ONE + ["train", str(recipe(tmp_path, hub, max_skipped=100, batch_size=2)), "--output-dir", str(one)])
    proc = launch(LAUNCH + ["train", str(recipe(tmp_path, hub, max_skipped=100, batch_size=1)),
                            "--output-dir", str(two)], timeout=300, port="29519")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    listed = sorted((r["step"], r["epoch"], r["index"]) for r in skipped_rows(one))
    assert listed and sorted((r["step"], r["epoch"], r["index"]) for r in skipped_rows(two)) == listed
    losses = [r for r in map(json.loads, (two / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in losses] == list(range(1, 11))
    assert json.loads((two / "metrics.json").read_text())["skipped_samples"] == len(listed)
