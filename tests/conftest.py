"""Every test runs offline: the Hub must never be needed to pass the suite."""

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny models gain nothing from a second thread, and two torch threads stall badly whenever
# another process wants the CPU (a 2-step run took 18 s instead of 0.6 s). Subprocess tests set
# OMP_NUM_THREADS=1 for the same reason.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""Real data beside the checkout (CamVid, SceneParse150 samples); tests that use it skip without it."""


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One real tiny training run (see tests/test_train.py), shared by the artifact tests."""
    from segkit.cli import main as cli
    from tests.test_train import write_recipe

    tmp = tmp_path_factory.mktemp("run")
    assert cli(["train", str(write_recipe(tmp)), "--output-dir", str(tmp / "out")]) == 0
    return tmp / "out"
