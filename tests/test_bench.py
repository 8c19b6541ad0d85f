"""Every bench/ script runs in its --smoke mode (tiny models, a few images) and records its JSON
lines: the long benchmarks are not run in CI, but they must keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "common.py")


def run(script: str, tmp_path: Path, *extra: str) -> list[dict]:
    jsonl = tmp_path / "results.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--jsonl", str(jsonl), *extra],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []


def test_every_script_is_smoke_tested():
    tested = {"bench_decode.py", "bench_metrics.py", "bench_data.py", "bench_train_step.py", "bench_gpu.py", "bench_predict.py",
              "bench_head_init.py", "race.py", "race_finetune.py", "baseline_trainer.py", "profile_step.py",
              "bench_onnx.py", "bench_loader.py"}  # bench_onnx.py: tests/test_onnx.py
    assert set(SCRIPTS) <= tested, f"add a smoke test for {set(SCRIPTS) - tested}"


@pytest.mark.slow
def test_train_step_script(tmp_path: Path):
    steps = run("bench_train_step.py", tmp_path)
    assert {r["family"] for r in steps} == {"segformer", "maskformer", "mask2former", "vit"}
    assert all(r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in steps)


@pytest.mark.slow
def test_gpu_script_on_cpu(tmp_path: Path):
    """FLOPs counted on the eager model, so the compiled row really ran Dynamo's graphs (traced with
    the eager backend in the smoke run); without ../shared/data the loader row is skipped, said first."""
    gpu = run("bench_gpu.py", tmp_path)
    trained = {r["compiled"]: r for r in gpu if r["bench"] == "gpu_maskformer"}
    assert set(trained) == {False, "eager"} and "gpu_segformer_inference" in {r["bench"] for r in gpu}
    assert trained["eager"]["compiled_graphs"] > 0 and trained[False]["compiled_graphs"] == 0
    assert trained["eager"]["tflop_per_step"] == trained[False]["tflop_per_step"] > 0
    loader = [r for r in gpu if r["bench"] == "gpu_data_pipeline"]
    if (ROOT.parent / "shared" / "data" / "camvid").is_dir():
        assert len(loader) == 1 and loader[0]["images_per_s"] > 0
    else:
        assert not loader


def test_loader_script(tmp_path: Path):
    rows = run("bench_loader.py", tmp_path)
    assert [r["family"] for r in rows] == ["segformer", "maskformer", "mask2former", "vit"]
    assert all(r["images_per_s_per_worker"] > 0 and r["workers_needed"] >= 1 for r in rows)


def test_metrics_script(tmp_path: Path):
    rows = run("bench_metrics.py", tmp_path)
    assert [r["method"] for r in rows] == ["segkit CM, 1 threads", "segkit CM, 1 thread", "NumPy boolean masks",
                                           "evaluate mean_iou formula"]
    rows = run("bench_metrics.py", tmp_path, "--evaluate")  # segkit's metric through evaluate, offline
    assert rows[-1]["method"] == "segkit through evaluate" and rows[-1]["seconds"] > 0


@pytest.mark.slow
def test_data_predict_and_profile_scripts(shared_data: Path, tmp_path: Path):
    profile = run("profile_step.py", tmp_path)
    assert [r["precision"] for r in profile] == ["fp32", "bf16"] and all(r["total_s"] > 0 for r in profile)
    data = run("bench_data.py", tmp_path)
    assert [r["workers"] for r in data if r["bench"] == "data_pipeline"] == [0, 1, 2]
    predict = [r for r in run("bench_predict.py", tmp_path) if r["bench"] == "predict"]
    assert len(predict) == 4 and all(r["images_per_s"] > 0 for r in predict)


@pytest.mark.slow
def test_race_script(shared_data: Path, tmp_path: Path):
    rows = run("race.py", tmp_path, "--out", str(tmp_path / "race"))
    systems = {r["system"]: r for r in rows}
    assert set(systems) == {"baseline (HF Trainer)", "segkit (recipe defaults)"}
    for r in systems.values():
        assert 0 <= r["test"]["strict_mIoU"] <= 1 and r["images_per_s"] > 0 and r["wall_s"] > 0
        assert "]; torch " in r["machine"]  # a speed figure names the CPU features it was measured with


@pytest.mark.slow
def test_race_finetune_script(shared_data: Path, tmp_path: Path):
    """Both sides from one (tiny) 11-class checkpoint, two budgets, two class subsets, one scorer."""
    rows = run("race_finetune.py", tmp_path, "--out", str(tmp_path / "rf"))
    assert {(r["subset"], r["minutes"], r["system"]) for r in rows} == {
        (s, m, system) for s in ("4 rare", "thin") for m in (0.15, 0.25)
        for system in ("baseline (HF example way)", "segkit (defaults)")}
    for r in rows:
        test = r["test"]
        assert 0 <= test["strict_mIoU"] <= 1 and r["wall_s"] > 0
        assert all(0 <= test[f"{c}_predicted"] <= 1 and 0 <= test[f"{c}_covers"] <= 1 for c in r["classes"])
    assert (tmp_path / "rf" / "c11-smoke" / "model" / "config.json").is_file()  # trained once, shared


@pytest.mark.slow
def test_head_init_script(shared_data: Path, tmp_path: Path):
    """A tiny 11-class CamVid checkpoint stands in for the real one."""
    from segkit.cli import main as cli

    recipe = ROOT / "recipes" / "camvid-11class-segformer.yaml"
    sets = ["model.size=tiny", "train.max_steps=2", "classes.max_samples=16", "classes.max_eval_samples=2",
            "augment.crop_size=64", "train.num_workers=0", "train.tracker=none", "train.num_overlays=0",
            f"data.path={shared_data / 'camvid'}"]
    assert cli(["train", str(recipe), *[a for s in sets for a in ("--set", s)], "--output-dir", str(tmp_path / "c11")]) == 0
    rows = run("bench_head_init.py", tmp_path, "--checkpoint", str(tmp_path / "c11"), "--out", str(tmp_path / "hi"))
    zero = {r["method"]: r for r in rows if r["bench"] == "head_init_step0"}
    assert set(zero) == {"fit", "mean", "random"} and zero["fit"]["agreement"] > 0.5
    assert {r["head_init"] for r in rows if r["bench"] == "head_init_trained"} == {"checkpoint", "random"}


def test_decode_script(tmp_path: Path):
    rows = run("bench_decode.py", tmp_path)
    assert {r["format"] for r in rows} >= {"coco", "cvat", "labelme", "label_studio", "voc", "colour_masks"}
    assert all(r["masks_per_s"] > 0 and r["id_png_masks_per_s"] > 0 for r in rows)
