"""Export a trained model to ONNX, and check that onnxruntime gives the masks PyTorch gives.

The graph takes the pixels the saved image processor produces (B, 3, H, W), with batch, height
and width dynamic, and returns class scores (B, C, h, w) at the family's native resolution: 1/4
of the input for SegFormer and MaskFormer/Mask2Former (whose semantic combination, class
probabilities times mask probabilities with the null class dropped, is inside the graph:
`segkit.models.outputs.to_scores`), the input's own for the ViT/DINOv2 UperNet. Resizing to the
image, padding and sliding windows stay in `segkit.infer`, shared with the PyTorch path.

It exports with the dynamo exporter (`torch.onnx.export(dynamo=True)`) and falls back to
TorchScript tracing only when dynamo fails or its graph fails the parity check, and says so.
The parity check runs both on images of several sizes (so a graph that only holds at the traced
shape is caught) through the one inference path, and refuses the export below
`MIN_AGREEMENT`. int8 (onnxruntime dynamic quantisation) and fp16 variants get their own
figures; one that fails parity is reported and left out, never written silently.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from segkit.hub.onnx_swin import make_swin_exportable
from segkit.infer.onnx_model import META_KEY, ONNX_FILE, OnnxSegModel, require
from segkit.infer.scores import eval_transform, scores_for
from segkit.models.base import SegModel
from segkit.models.outputs import to_scores

log = logging.getLogger("segkit.onnx")

MIN_AGREEMENT = 0.999
"""Share of pixels whose class must agree with PyTorch's for an export to be written."""
OPSET = 18
VARIANTS = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
BLOCKED = {
    "mask2former": "aten::view in transformers' Swin window attention (SwinSelfAttention's "
                   "`attn_output.reshape(*input_shape, -1)`): with dynamic height and width the dynamo exporter "
                   "(torch 2.13) fails with 'Cannot view a tensor with shape [..., 16, 2, 32] and strides "
                   "(1024, 32, 512, 1)', even with Swin's padding made branch-free (segkit.hub.onnx_swin, which "
                   "is what lets MaskFormer's own Swin export), and TorchScript tracing freezes the window "
                   "padding at the traced size. Deploy MaskFormer or SegFormer with ONNX instead.",
}
"""Families refused up front, with the operator that blocks them (measured: an attempt takes minutes)."""


class OnnxExportError(ValueError):
    """An ONNX export that was refused; the message gives the figures and what to do."""


@dataclass
class Parity:
    """onnxruntime against PyTorch on the same inputs, through the same inference path."""

    max_abs_diff: float
    """Largest difference of any class score at image size."""
    agreement: float
    """Share of pixels whose argmax class is the same."""
    pixels: int
    images: int
    size_mb: float = 0.0
    """Size of the .onnx file."""

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_AGREEMENT

    def describe(self) -> str:
        return (f"{self.agreement:.4%} of {self.pixels} pixels agree on {self.images} images, "
                f"max score difference {self.max_abs_diff:.2e}")


def _exportable_pool(x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling as two averaging matrices built from the input's size. torch's
    own decomposition fixes its gather indices at the traced size, so a dynamic-shape UperNet
    graph runs at other sizes with wrong numbers (or fails); this one holds at any size."""
    def bins(n: Any, s: int) -> torch.Tensor:
        i = torch.arange(s, device=x.device).unsqueeze(1)
        pos = torch.arange(n, device=x.device).unsqueeze(0)
        start, end = (i * n) // s, ((i + 1) * n + s - 1) // s  # PyTorch's bin edges
        m = ((pos >= start) & (pos < end)).to(x.dtype)
        return m / m.sum(1, keepdim=True)

    return torch.einsum("ih,bchw,jw->bcij", bins(x.shape[-2], out[0]), x, bins(x.shape[-1], out[1]))


class _Pool(nn.Module):
    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.out = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _exportable_pool(x, self.out)


class ScoreGraph(nn.Module):
    """pixels -> class scores, the part of a SegModel that goes into the graph (no input checks:
    they are Python decisions on the shape, which `segkit.infer` makes before calling)."""

    def __init__(self, model: SegModel) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).float().eval()
        for name, module in list(self.model.named_modules()):
            if isinstance(module, nn.AdaptiveAvgPool2d):
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                pool = _Pool(module.output_size)
                setattr(parent, child, pool)
                for value in vars(parent).values():  # UperNet's blocks also call their layers from a plain list
                    if isinstance(value, list):
                        value[:] = [pool if v is module else v for v in value]
        make_swin_exportable(self.model)  # MaskFormer/Mask2Former: Swin's padding at any size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        inner = getattr(self.model, "model", None)
        if inner is not None:  # a transformers model: its raw output, turned into scores in one place
            return to_scores(inner(pixel_values=pixel_values))
        return self.model(pixel_values).scores  # segkit's own heads (ViT linear)


def example_input(model: SegModel) -> torch.Tensor:
    """(2, 3, h, w) pixels to trace with: batch > 1 and h != w, so neither is taken as fixed."""
    d = model.size_divisor
    h, w = model.input_spec.size or model.input_spec.window or (64, 64)
    h = max(model.min_size, -(-h // d) * d)
    return torch.randn(2, 3, h, max(model.min_size, -(-w // d) * d) + d)


def parity_images(model: SegModel, count: int = 4) -> list[Image.Image]:
    """Synthetic images around the model's own input size: two alike (a batch of two), one
    stretched off the size grid, one larger."""
    from segkit.data.sources.synthetic import make_synthetic

    h, w = model.input_spec.size or model.input_spec.window or (64, 64)
    side = max(h, w, model.min_size)
    rows = make_synthetic(max(count, 3), side, seed=11, split="onnx-parity")
    images = [r["image"].convert("RGB") for r in rows]
    sizes = [(side, side), (side, side), (int(side * 1.4) + 3, int(side * 1.1) + 5), (side * 2, int(side * 1.5))]
    return [im.resize(s) for im, s in zip(images, sizes[:count])]


@torch.no_grad()
def check_parity(model: SegModel, runtime: OnnxSegModel, images: Sequence[Image.Image]) -> Parity:
    """Scores of both at image size, through `segkit.infer.segment` (same batching and padding)."""
    transform = eval_transform(model)
    inputs = [transform(im) for im in images]
    sizes = [(im.height, im.width) for im in images]
    ours = dict(scores_for(model, inputs, sizes, device="cpu"))
    theirs = dict(scores_for(runtime, inputs, sizes, device="cpu"))
    diff, agree, pixels = 0.0, 0, 0
    for i in ours:
        diff = max(diff, (ours[i] - theirs[i]).abs().max().item())
        agree += (ours[i].argmax(0) == theirs[i].argmax(0)).sum().item()
        pixels += ours[i][0].numel()
    return Parity(diff, agree / pixels, pixels, len(images))


def _metadata(model: SegModel, graph_out: torch.Tensor, example: torch.Tensor, exporter: str) -> dict[str, Any]:
    processor = model.image_processor()
    stride = example.shape[-1] // graph_out.shape[-1]
    return {"family": model.family, "labels": model.labels.to_dict(), "input_spec": model.input_spec.to_dict(),
            "size_divisor": model.size_divisor, "min_size": model.min_size, "strict_size": model.strict_size,
            "processor_class": type(processor).__name__, "processor": processor.to_dict(),
            "scores_stride": stride, "exporter": exporter}


def _dynamo(graph: ScoreGraph, example: torch.Tensor, path: Path) -> None:
    dyn = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["pixel_values"], output_names=["scores"],
                                    dynamic_shapes={"pixel_values": {0: dyn, 2: dyn, 3: dyn}}, verbose=False)
    program.save(str(path))


def _torchscript(graph: ScoreGraph, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["pixel_values"], output_names=["scores"],
                          dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                                        "scores": {0: "batch", 2: "scores_height", 3: "scores_width"}})


def _write_metadata(path: Path, meta: dict[str, Any]) -> None:
    onnx = require("onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(proto, str(path))  # one file: the tiny and base models stay under protobuf's 2 GB


def _size_mb(path: Path) -> float:
    return round(os.path.getsize(path) / 2**20, 3)


def export_onnx(model: SegModel, out_dir: str | Path, images: Sequence[Image.Image] | None = None,
                variants: Sequence[str] = ()) -> dict[str, Any]:
    """Write `out_dir/model.onnx` (and each of `variants`: int8, fp16) and return the figures the
    model card shows. Raises OnnxExportError, writing nothing, when the fp32 graph fails parity."""
    require("onnxruntime")
    require("onnxscript")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise OnnxExportError(f"--quantize {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}.")
    if model.family in BLOCKED:
        raise OnnxExportError(f"{model.family} cannot be exported to ONNX yet: {BLOCKED[model.family]}")
    out = Path(out_dir)
    model = model.float().eval()
    graph = ScoreGraph(model)
    example = example_input(model)
    with torch.no_grad():
        graph_out = graph(example)
    images = list(images) if images is not None else parity_images(model)
    path = out / ONNX_FILE
    attempts: list[str] = []
    parity: Parity | None = None
    for exporter, run in (("dynamo", _dynamo), ("torchscript", _torchscript)):
        try:
            run(graph, example, path)
            _write_metadata(path, _metadata(model, graph_out, example, exporter))
            parity = check_parity(model, OnnxSegModel(path), images)
        except Exception as e:  # noqa: BLE001 - every exporter failure is reported, then the next is tried
            attempts.append(f"{exporter}: {_first_line(e)}")
            parity = None
        if parity is not None and parity.passed:
            break
        if parity is not None:
            attempts.append(f"{exporter}: parity {parity.describe()}")
        path.unlink(missing_ok=True)
        if exporter == "dynamo":
            log.warning("ONNX: the dynamo exporter failed (%s); falling back to TorchScript tracing", attempts[-1])
    if parity is None or not parity.passed:
        raise OnnxExportError(f"{model.family}: no ONNX graph matches PyTorch (need {MIN_AGREEMENT:.1%} of pixels "
                              "agreeing): " + "; ".join(attempts) + ". Nothing was written.")
    parity.size_mb = _size_mb(path)
    meta = _metadata(model, graph_out, example, exporter)
    report: dict[str, Any] = {
        "file": ONNX_FILE, "exporter": exporter, "fallback_reason": attempts[0] if attempts else None,
        "opset": OPSET if exporter == "dynamo" else 17, "scores_stride": meta["scores_stride"],
        "min_agreement": MIN_AGREEMENT, "parity": {"fp32": asdict(parity)}, "refused": {}}
    for name in variants:
        target = out / VARIANTS[name]
        try:
            (_quantize_int8 if name == "int8" else _to_fp16)(path, target)
            _write_metadata(target, {**meta, "variant": name})
            result = check_parity(model, OnnxSegModel(target), images)
            result.size_mb = _size_mb(target)
        except Exception as e:  # noqa: BLE001 - a failed variant is reported, the fp32 export stands
            target.unlink(missing_ok=True)
            report["refused"][name] = _first_line(e)
            continue
        if not result.passed:
            target.unlink(missing_ok=True)
            report["refused"][name] = f"parity {result.describe()}"
        report["parity"][name] = asdict(result)
        if result.passed:
            report.setdefault("variants", {})[name] = VARIANTS[name]
    (out / "onnx_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def _to_fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx = require("onnx")
    # keep_io_types: the graph still takes and returns float32, so callers do not change
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def summary(report: dict[str, Any]) -> str:
    """One line per file for the terminal: what was written, with its figures, and what was refused."""
    lines = []
    for name, p in report["parity"].items():
        file = ONNX_FILE if name == "fp32" else VARIANTS[name]
        state = "refused" if name in report["refused"] else "written"
        lines.append(f"  {name}: {file} {state}, {p['size_mb']:.2f} MB; {Parity(**p).describe()}")
    for name, why in report["refused"].items():
        if name not in report["parity"]:
            lines.append(f"  {name}: refused: {why}")
    head = f"ONNX ({report['exporter']} exporter; scores at 1/{report['scores_stride']} of the input):"
    if report.get("fallback_reason"):
        head += f"\n  dynamo failed ({report['fallback_reason']}); TorchScript tracing used instead"
    return "\n".join([head, *lines])


def card_section(report: dict[str, Any]) -> list[str]:
    """The model card's "ONNX" section: each file with its parity figures, and what was refused."""
    stride = report["scores_stride"]
    where = "the input's resolution" if stride == 1 else f"1/{stride} of the input's resolution"
    rows = ["| file | weights | size (MB) | pixels agreeing with PyTorch | max score difference |",
            "|---|---|---:|---:|---:|"]
    for name, p in report["parity"].items():
        file = ONNX_FILE if name == "fp32" else VARIANTS[name]
        shipped = f"`{file}`" if name not in report["refused"] else f"{file} (not written: below the threshold)"
        rows.append(f"| {shipped} | {name} | {p['size_mb']:.2f} | {p['agreement']:.4%} | {p['max_abs_diff']:.2e} |")
    refused = [f"- {name}: not written: {why}" for name, why in report["refused"].items()
               if name not in report["parity"]]
    exporter = "torch.onnx's dynamo exporter" if report["exporter"] == "dynamo" else \
        f"TorchScript tracing (the dynamo exporter failed: {report['fallback_reason']})"
    first = next(iter(report["parity"].values()))
    return ["## ONNX", "",
            f"`{ONNX_FILE}` was written by {exporter}, opset {report['opset']}. It takes the pixels this folder's "
            "image processor produces, `pixel_values` (batch, 3, height, width), every axis dynamic, and returns "
            f"class scores `scores` (batch, classes, h, w) at {where}; resize them to the image and take the argmax.",
            "",
            f"Checked at export against PyTorch on {first['images']} synthetic images of several sizes, through "
            f"segkit's inference path (an export is refused below {report['min_agreement']:.1%} agreement):", "",
            *rows, *refused, "", "```bash", "segkit predict model.onnx photos/ --output predictions/   # onnxruntime",
            "```", ""]
