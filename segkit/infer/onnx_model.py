"""An exported `model.onnx` run by onnxruntime, shaped like a `SegModel` for the inference path.

`segkit.infer.segment` and `segkit.infer.sliding` need from a model only its labels, input spec,
image processor, size rules and a call that returns `SegOutput(scores)`. `OnnxSegModel` gives
exactly that, so ONNX prediction runs through the same code as PyTorch prediction (batching by
shape, padding, sliding windows, flip) instead of a copy of it.

Everything it needs is in the .onnx file's metadata (written by `segkit.hub.onnx`): the label
set, the input spec, the size rules and the image processor's settings, so a lone model.onnx
predicts the same masks as the export folder it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from segkit.config.sections import InputSpec
from segkit.labels import LabelSet
from segkit.models.base import SegOutput

ONNX_FILE = "model.onnx"
"""The graph's name inside an export folder."""
META_KEY = "segkit"
"""metadata_props key holding the JSON that `OnnxSegModel` is rebuilt from."""
INSTALL_HINT = "pip install 'segkit[onnx]'"


class MissingExtra(ValueError):
    """onnx / onnxruntime is not installed; the message names the install command."""


def require(module: str) -> Any:
    """Import onnx / onnxruntime / onnxscript lazily: segkit imports and trains without them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"ONNX export and prediction need {module}, which is not installed: "
                          f"{INSTALL_HINT}") from None


RUNTIMES = ("auto", "torch", "onnx")
"""`segkit predict --runtime`: auto takes PyTorch wherever there are weights, else the graph."""


def onnx_path(model: str | Path, runtime: str = "auto") -> Path | None:
    """The .onnx file to predict with (a file, or a folder holding model.onnx), or None for
    PyTorch. An export folder holds both: `runtime` "onnx" picks its graph, "auto" and "torch"
    its weights (the model the reported figures come from)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime {runtime}: choose from {', '.join(RUNTIMES)}.")
    path = Path(model).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file. Write one with `segkit export RUN --format onnx`.")
        if runtime == "torch":
            raise ValueError(f"--runtime torch: {path} is an ONNX graph; give the export folder that holds "
                             "its weights, or leave --runtime out.")
        return path
    graph = path / ONNX_FILE if path.is_dir() and (path / ONNX_FILE).is_file() else None
    if runtime == "onnx":
        if graph is None:
            raise FileNotFoundError(f"--runtime onnx: {path} holds no {ONNX_FILE}. Write one with "
                                    "`segkit export RUN --format onnx`, or leave --runtime out.")
        return graph
    if runtime == "auto" and graph is not None and not (path / "model.safetensors").is_file():
        return graph  # a folder with only the graph
    return None


class OnnxSegModel:
    """An onnxruntime session with the interface `segkit.infer` reads from a `SegModel`."""

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        ort = require("onnxruntime")
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers say nothing to a user
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if meta is None:
            raise ValueError(f"{path} was not written by `segkit export --format onnx` (no segkit metadata); "
                             "export the run again.")
        self.meta: dict[str, Any] = json.loads(meta)
        self.labels = LabelSet.from_dict(self.meta["labels"])
        self.input_spec = InputSpec.from_dict(self.meta["input_spec"])
        self.family: str = self.meta["family"]
        self.size_divisor: int = self.meta["size_divisor"]
        self.min_size: int = self.meta["min_size"]
        self.strict_size: bool = self.meta["strict_size"]
        self._processor = _processor(self.meta["processor_class"], self.meta["processor"])
        self._input = self.session.get_inputs()[0].name

    def image_processor(self) -> Any:
        return self._processor

    def __call__(self, pixel_values: torch.Tensor) -> SegOutput:
        """(B, 3, h, w) pixels -> SegOutput with (B, C, h', w') float32 scores, as the graph gives them."""
        x = pixel_values.detach().float().cpu().numpy()
        (scores,) = self.session.run(None, {self._input: np.ascontiguousarray(x)})
        return SegOutput(scores=torch.from_numpy(scores).float().to(pixel_values.device))

    # What callers of a torch module use: the device default, .to() and .eval() are no-ops here.
    def parameters(self) -> Iterator[torch.Tensor]:
        yield torch.empty(0)

    def to(self, *args: Any, **kwargs: Any) -> "OnnxSegModel":
        return self

    def eval(self) -> "OnnxSegModel":
        return self


def _processor(class_name: str, settings: dict[str, Any]) -> Any:
    import transformers

    settings = {k: v for k, v in settings.items() if k not in ("image_processor_type", "processor_class")}
    return getattr(transformers, class_name).from_dict(settings)
