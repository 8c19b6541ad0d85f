"""Which numeric precision runs: one rule for training (`train.mixed_precision`) and prediction
(`segkit predict --precision`).

On a GPU, `auto` is bf16 where the GPU has it, else fp16. On a CPU a flag cannot decide it: with
AMX a bf16 matmul ran 6x faster than fp32, with only AVX512-BF16 it ran slower (BENCHMARKS.md), and
without either bf16 is emulated. So on a CPU that computes bf16 natively, `auto` times the model's
own step in both precisions (a fraction of a second to a few seconds, on a copy of the model, cached
per machine and model) and takes bf16 only when it is clearly faster. A CPU without native bf16
runs fp32.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, ContextManager

import torch

CLEARLY_FASTER = 1.10
"""bf16 is chosen on a CPU only when its measured rate is at least this many times fp32's: a few
percent is within the noise of a short probe, and fp32 is the reference the figures are scored in."""
PROBE_STEPS = 2
"""Timed steps per precision, after one untimed warm-up step."""
ALIASES = {"fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class Precision:
    name: str
    """'no' (fp32), 'bf16' or 'fp16': accelerate's names."""
    why: str
    """How it was chosen, with the measured rates when it was measured: for the banner."""
    speedup: float = 1.0
    """Measured rate of this precision over fp32's (1 unless measured): a time budget's reports,
    scored in fp32, cost this many times the evaluations made during training."""

    @property
    def label(self) -> str:
        return "fp32" if self.name == "no" else self.name

    def autocast(self, device_type: str) -> Callable[[], ContextManager] | None:
        """A context factory for inference under this precision, or None for fp32."""
        if self.name == "no":
            return None
        return partial(torch.autocast, device_type, dtype=torch.bfloat16 if self.name == "bf16" else torch.float16)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated and always slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cpu_features() -> str:
    """The CPU's name and the features that decide bf16 speed, for banners and benchmark records."""
    flags = []
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                    platform.processor())
        have = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in have]
    except OSError:
        name = platform.processor()
    return f"{name or 'unknown CPU'} [{', '.join(flags) or 'no AVX2'}]; torch {torch.backends.cpu.get_cpu_capability()}"


def resolve(choice: str, device_type: str, probe: Callable[[str], float] | None = None,
            field: str = "train.mixed_precision") -> Precision:
    """The precision to run for `choice` ('auto', 'no'/'fp32', 'bf16', 'fp16') on `device_type`.

    `probe(name)` measures images/s in precision `name` ('no' or 'bf16'); without it, `auto` on a
    CPU keeps fp32. fp16 on a CPU is refused: accelerate silently ignores it there.
    """
    if choice not in ALIASES and choice != "auto":
        raise ValueError(f"{field}: '{choice}' is not a precision. Use auto, fp32 (no), bf16 or fp16.")
    if choice != "auto":
        name = ALIASES[choice]
        if name == "fp16" and device_type == "cpu":
            raise ValueError(f"{field}: fp16 needs a GPU (it is ignored on CPU). Use bf16 or fp32.")
        return Precision(name, f"{choice}, as set")
    if device_type == "cuda":
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Precision(name, f"auto: {name} on this GPU")
    if not cpu_has_bf16():
        return Precision("no", "auto: fp32 (this CPU has no native bf16)")
    if probe is None:
        return Precision("no", "auto: fp32")
    try:
        fp32, bf16 = probe("no"), probe("bf16")
    except Exception as e:  # noqa: BLE001  # a model the probe cannot run still trains, in fp32
        return Precision("no", f"auto: fp32 (bf16 could not be timed: {type(e).__name__}: {e})")
    name = "bf16" if bf16 >= CLEARLY_FASTER * fp32 else "no"
    return Precision(name, f"auto: {'bf16' if name == 'bf16' else 'fp32'} (measured fp32 {fp32:.2f}, "
                           f"bf16 {bf16:.2f} img/s)", bf16 / fp32 if name == "bf16" else 1.0)


def step_probe(model: torch.nn.Module, size: tuple[int, int], batch: int, backward: bool,
               cache: Path | None = None) -> Callable[[str], float]:
    """A `probe` for `resolve`: images/s of `model`'s forward (and backward) on random images of
    `size`, timed on a copy of the model so that neither its weights, its BatchNorm statistics nor
    the global RNG are touched. Results are cached in `cache` (a JSON file) per machine and model."""
    key = _probe_key(model, size, batch, backward)

    def probe(name: str) -> float:
        stored = _read(cache)
        if f"{key}:{name}" in stored:
            return stored[f"{key}:{name}"]
        rate = _measure(model, size, batch, backward, name)
        if cache is not None:
            _write(cache, {**_read(cache), f"{key}:{name}": rate})
        return rate

    return probe


def cached_speedup(model: torch.nn.Module, size: tuple[int, int], batch: int, backward: bool,
                   cache: Path | None) -> float:
    """bf16's rate over fp32's as `step_probe` stored them for this model and machine, or 1 when it
    has not measured both: what a run that cannot change its precision still needs to know."""
    key, stored = _probe_key(model, size, batch, backward), _read(cache)
    if f"{key}:no" in stored and f"{key}:bf16" in stored:
        return stored[f"{key}:bf16"] / stored[f"{key}:no"]
    return 1.0


def default_cache() -> Path:
    """`$SEGKIT_CACHE/precision.json`, by default under `~/.cache/segkit`."""
    return Path(os.environ.get("SEGKIT_CACHE", Path.home() / ".cache" / "segkit")).expanduser() / "precision.json"


def _measure(model: torch.nn.Module, size: tuple[int, int], batch: int, backward: bool, name: str) -> float:
    rng = torch.get_rng_state()
    try:
        twin = copy.deepcopy(model).train(backward)
        x = torch.randn((batch, 3, *size), generator=torch.Generator().manual_seed(0))
        autocast = Precision(name, "").autocast("cpu")
        elapsed = 0.0
        for i in range(1 + PROBE_STEPS):
            start = time.perf_counter()
            with torch.enable_grad() if backward else torch.inference_mode():
                with autocast() if autocast else nullcontext():
                    scores = twin(x).scores
                if backward:
                    scores.float().mean().backward()
            if i:
                elapsed += time.perf_counter() - start
        return batch * PROBE_STEPS / max(elapsed, 1e-9)
    finally:
        torch.set_rng_state(rng)


def _probe_key(model: torch.nn.Module, size: tuple[int, int], batch: int, backward: bool) -> str:
    config = getattr(getattr(model, "model", None), "config", None)
    described = config.to_json_string() if hasattr(config, "to_json_string") else repr(model)
    params = sum(p.numel() for p in model.parameters())
    text = "|".join([cpu_features(), str(os.cpu_count()), str(torch.get_num_threads()), type(model).__name__,
                     str(params), described, str(size), str(batch), str(backward)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: Path | None) -> dict[str, float]:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a new measurement


def _write(path: Path, values: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(values, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still trains; it measures again next time
