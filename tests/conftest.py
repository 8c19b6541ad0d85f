"""Every test runs offline: the Hub must never be needed to pass the suite."""

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # segkit train sizes torch's threads unless this says

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


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """The Hub at the HTTP layer (tests/hub_replica.py), with fresh caches and offline mode off for
    this test only: huggingface_hub and datasets read their settings once, at import."""
    import datasets
    import huggingface_hub.constants as hub_constants
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import httpx as httpx2
    from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

    from tests.hub_replica import FakeHub

    hub = FakeHub()
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle), follow_redirects=True,
                                             event_hooks={"request": [hf_request_event_hook]}, timeout=None))
    try:
        yield hub
    finally:
        set_client_factory(default_client_factory)
