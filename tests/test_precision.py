"""Precision `auto` is decided by timing the model's own step, not by a CPU flag."""

from __future__ import annotations

import json

import pytest
import torch

from segkit.config.sections import ModelConfig
from segkit.labels import LabelSet
from segkit.models.build import build_model
from segkit.precision import CLEARLY_FASTER, cpu_features, resolve, step_probe

LABELS = LabelSet(("background", "a", "b"), background=0)


def rates(fp32: float, bf16: float):
    return lambda name: {"no": fp32, "bf16": bf16}[name]


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU that computes bf16 natively: the case where only a measurement can decide."""
    monkeypatch.setattr("segkit.precision.cpu_has_bf16", lambda: True)


def test_auto_takes_bf16_only_when_clearly_faster(native_bf16):
    assert resolve("auto", "cpu", rates(10.0, 10.0 * CLEARLY_FASTER + 0.01)).name == "bf16"
    slower = resolve("auto", "cpu", rates(5.1, 5.0))  # the AVX512-BF16 machine of issue 21
    assert slower.name == "no" and "measured fp32 5.10, bf16 5.00 img/s" in slower.why
    assert resolve("auto", "cpu", rates(10.0, 10.5)).name == "no"  # within the noise of a short probe
    assert resolve("auto", "cpu").name == "no"  # nothing measured: the reference precision


def test_settings_and_refusals(monkeypatch):
    monkeypatch.setattr("segkit.precision.cpu_has_bf16", lambda: False)
    assert resolve("auto", "cpu", rates(1.0, 100.0)).name == "no"  # emulated bf16 is never measured
    assert resolve("fp32", "cpu").name == resolve("no", "cpu").name == "no"
    assert resolve("bf16", "cpu").name == "bf16"
    with pytest.raises(ValueError, match="train.mixed_precision: fp16 needs a GPU"):
        resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="--precision: 'half' is not a precision"):
        resolve("half", "cpu", field="--precision")


def test_a_probe_that_fails_trains_in_fp32(native_bf16):
    def broken(name: str) -> float:
        raise RuntimeError("no kernel")

    chosen = resolve("auto", "cpu", broken)
    assert chosen.name == "no" and "could not be timed" in chosen.why


def test_the_probe_touches_nothing_and_is_cached(tmp_path):
    """Timed on a copy: the weights, BatchNorm statistics and the global RNG are as before, so a
    run that measured and one that read the cache train alike. The second call reads the cache."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="segformer", size="tiny"), LABELS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cache = tmp_path / "precision.json"
    probe = step_probe(model, (64, 64), batch=1, backward=True, cache=cache)
    first = probe("no")
    assert first > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())
    stored = json.loads(cache.read_text())
    assert list(stored.values()) == [first]
    cache.write_text(json.dumps({k: 123.0 for k in stored}))
    assert probe("no") == 123.0  # read back, not measured again
    assert "[" in cpu_features() and "torch" in cpu_features()  # name [flags]; torch's capability


def test_a_second_run_in_one_process_keeps_the_first_runs_precision(tmp_path, monkeypatch):
    """accelerate fixes the precision once per process: a second `auto` run in it (a notebook, the
    test suite) takes that one instead of measuring anew and failing on a different answer. Its
    speed-up (what a time budget prices its fp32 report by) comes from the first run's probe, as
    cached; with nothing cached it is 1."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from segkit.config.sections import TrainConfig
    from segkit.train.runtime import choose_precision

    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path))
    cfg = TrainConfig(mixed_precision="auto", batch_size=2)
    model = build_model(ModelConfig(family="segformer", size="tiny"), LABELS)
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        Accelerator(cpu=True, mixed_precision="bf16")
        chosen = choose_precision(cfg, model, (32, 32))
        assert chosen.name == "bf16" and "first run chose it" in chosen.why and chosen.speedup == 1.0
        probe = step_probe(model, (32, 32), batch=2, backward=True, cache=tmp_path / "precision.json")
        probe("no"), probe("bf16")  # what the first run's probe leaves in the cache
        stored = json.loads((tmp_path / "precision.json").read_text())
        (tmp_path / "precision.json").write_text(json.dumps({k: 10.0 if k.endswith(":no") else 17.0 for k in stored}))
        assert choose_precision(cfg, model, (32, 32)).speedup == pytest.approx(1.7)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
