"""ONNX deploy: `segkit export --format onnx` writes a graph that passes the parity check, and
`segkit predict MODEL.onnx` gives the PyTorch path's masks through onnxruntime; Mask2Former is
refused with the operator that blocks it; segkit imports without the onnx extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from segkit.cli import main as cli  # noqa: E402
from tests.test_train import write_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    "segformer": ({"family": "segformer"}, {"eval_mode": "none"}),
    "vit": ({"family": "vit", "head": "multilevel"}, {"eval_mode": "pad"}),  # DINOv2 + UperNet, any size
    # Swin pads inside the model at any size (segkit.hub.onnx_swin puts that padding in the graph)
    "maskformer": ({"family": "maskformer"}, {"eval_mode": "none"}),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory) -> tuple[str, Path]:
    """(family, export folder) of a briefly trained tiny run, exported with --format onnx."""
    family = request.param
    model, augment = FAMILIES[family]
    tmp = tmp_path_factory.mktemp(family)
    recipe = write_recipe(tmp, model={**model, "size": "tiny"}, augment={"scale": [0.8, 1.2], **augment},
                          train={"max_steps": 20, "eval_every": 20, "tracker": "none", "lr": 0.003})
    assert cli(["train", str(recipe), "--output-dir", str(tmp / "run")]) == 0
    assert cli(["export", str(tmp / "run"), "--output", str(tmp / "export"), "--format", "onnx"]) == 0
    return family, tmp / "export"


def images(folder: Path) -> Path:
    """Synthetic frames of several sizes, one large enough to go through sliding windows."""
    from segkit.data import make_synthetic

    folder.mkdir(exist_ok=True)
    rows = make_synthetic(3, 64, seed=7, split="onnx-test")
    sizes = [(64, 64), (90, 70), (64, 64), (200, 180)]
    for i, size in enumerate(sizes):
        rows[i % 3]["image"].convert("RGB").resize(size).save(folder / f"{i}.png")
    return folder


def test_export_writes_a_checked_graph_and_the_card_says_so(exported):
    family, export = exported
    report = json.loads((export / "onnx_report.json").read_text())
    assert (export / "model.onnx").is_file() and (export / "model.safetensors").is_file()
    assert report["exporter"] == "dynamo", report.get("fallback_reason")
    fp32 = report["parity"]["fp32"]
    assert fp32["agreement"] >= 0.999 and fp32["max_abs_diff"] < 1e-3 and fp32["images"] == 4
    assert report["scores_stride"] == (1 if family == "vit" else 4)
    card = (export / "README.md").read_text()
    assert "## ONNX" in card and f"{fp32['agreement']:.4%}" in card


def test_graph_holds_off_the_size_grid(exported):
    """The exported graph against the PyTorch inference path at sizes the export check did not
    use, none a multiple of 32 (MaskFormer's Swin pads its patches, windows and odd maps there)."""
    from segkit.hub.onnx import check_parity, parity_images
    from segkit.infer.onnx_model import OnnxSegModel
    from segkit.models.build import load_model

    family, export = exported
    model = load_model(export)
    shapes = [(33, 47), (70, 90), (131, 65)]
    ims = [im.resize((w, h)) for im, (h, w) in zip(parity_images(model, 3), shapes)]
    parity = check_parity(model, OnnxSegModel(export / "model.onnx"), ims)
    assert parity.agreement >= 0.999 and parity.max_abs_diff < 1e-3, f"{family}: {parity.describe()}"


def test_onnx_predict_matches_pytorch_predict(exported, tmp_path, capsys):
    """The same export folder (weights and model.onnx) through both runtimes, `--runtime onnx`
    against the default (PyTorch), through the one inference path (sliding windows included):
    masks agree on >= 99.9% of pixels."""
    family, export = exported
    folder = images(tmp_path / "images")
    assert cli(["predict", str(export), str(folder), "--output", str(tmp_path / "torch"), "--workers", "0"]) == 0
    assert "ONNX graph" not in capsys.readouterr().out
    assert cli(["predict", str(export), str(folder), "--output", str(tmp_path / "ort"), "--workers", "0",
                "--runtime", "onnx"]) == 0
    assert "precision fp32 inputs (the ONNX graph's own precision)" in capsys.readouterr().out
    same = total = 0
    for png in sorted((tmp_path / "torch" / "masks").glob("*.png")):
        with Image.open(png) as a, Image.open(tmp_path / "ort" / "masks" / png.name) as b:
            ours, theirs = np.asarray(a), np.asarray(b)
        assert ours.shape == theirs.shape
        same, total = same + (ours == theirs).sum(), total + ours.size
    assert total > 0 and same / total >= 0.999, f"{family}: {same / total:.4%} of pixels agree"
    assert (tmp_path / "ort" / "overlays").is_dir()


@pytest.mark.parametrize("exported", ["segformer"], indirect=True)  # the trained quickstart-style run
def test_int8_and_fp16_of_a_trained_model_each_get_their_own_check(exported, tmp_path, monkeypatch):
    """On a trained SegFormer (its classes have margins, so the check means something), int8 and
    fp16 are written with their own parity and size; an int8 graph whose scores are wrong
    (injected: shuffled over classes in onnxruntime) is reported and not written."""
    from segkit.infer.onnx_model import OnnxSegModel

    run = exported[1].parent / "run"
    out = tmp_path / "both"
    assert cli(["export", str(run), "--output", str(out), "--format", "onnx",
                "--quantize", "int8", "--quantize", "fp16"]) == 0
    report = json.loads((out / "onnx_report.json").read_text())
    assert report["refused"] == {} and report["variants"] == {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
    fp32, int8, fp16 = (report["parity"][k] for k in ("fp32", "int8", "fp16"))
    for name, p in (("int8", int8), ("fp16", fp16)):
        assert (out / f"model.{name}.onnx").is_file() and p["agreement"] >= 0.999, (name, p)
        assert 0 < p["size_mb"] < fp32["size_mb"], (name, p["size_mb"], fp32["size_mb"])
    assert int8["max_abs_diff"] > fp16["max_abs_diff"] > fp32["max_abs_diff"]  # each figure is its own
    assert f"{int8['agreement']:.4%}" in (out / "README.md").read_text()

    real_call = OnnxSegModel.__call__

    def wrong_int8(self, pixels):
        out = real_call(self, pixels)
        if self.path.name == "model.int8.onnx":
            out.scores = out.scores.roll(1, dims=1)
        return out

    monkeypatch.setattr(OnnxSegModel, "__call__", wrong_int8)
    bad = tmp_path / "bad"
    assert cli(["export", str(run), "--output", str(bad), "--format", "onnx", "--quantize", "int8"]) == 0
    report = json.loads((bad / "onnx_report.json").read_text())
    assert not (bad / "model.int8.onnx").exists() and (bad / "model.onnx").is_file()
    assert report["refused"]["int8"].startswith("parity") and report["parity"]["int8"]["agreement"] < 0.999
    assert "model.int8.onnx (not written" in (bad / "README.md").read_text()


def test_runtime_choice_for_an_export_folder(tmp_path):
    """An export folder with weights and model.onnx predicts with PyTorch unless told `onnx`; a
    graph alone runs in onnxruntime; a runtime that the path cannot give is refused in words."""
    from segkit.infer.onnx_model import onnx_path

    both, graph_only, weights_only = (tmp_path / n for n in ("both", "graph", "weights"))
    for folder, files in ((both, ("model.onnx", "model.safetensors")), (graph_only, ("model.onnx",)),
                          (weights_only, ("model.safetensors",))):
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")
    assert onnx_path(both) is None and onnx_path(both, "torch") is None
    assert onnx_path(both, "onnx") == both / "model.onnx" and onnx_path(graph_only) == graph_only / "model.onnx"
    with pytest.raises(FileNotFoundError, match=r"--runtime onnx: .* holds no model.onnx.*--format onnx"):
        onnx_path(weights_only, "onnx")
    with pytest.raises(ValueError, match=r"--runtime torch: .* is an ONNX graph"):
        onnx_path(both / "model.onnx", "torch")


def test_a_failing_graph_is_refused_with_its_figures(tmp_path, monkeypatch):
    """A graph whose scores are wrong (injected: the runtime's scores are shuffled over classes)
    is not written, and the message gives the agreement; a failing int8 variant is reported."""
    import torch

    from segkit.config.sections import InputSpec, ModelConfig
    from segkit.hub import onnx as onnx_export
    from segkit.infer.onnx_model import OnnxSegModel
    from segkit.labels import LabelSet
    from segkit.models.build import build_model

    model = build_model(ModelConfig(family="segformer", size="tiny"),
                        LabelSet(("background", "circle", "square"), background=0), spec=InputSpec("none", None, (64, 64)))
    real_call = OnnxSegModel.__call__

    def wrong(self, pixels):
        out = real_call(self, pixels)
        out.scores = out.scores.roll(1, dims=1) + 0.5 * torch.randn_like(out.scores)
        return out

    monkeypatch.setattr(OnnxSegModel, "__call__", wrong)
    with pytest.raises(onnx_export.OnnxExportError, match=r"need 99\.9% .*agree.*Nothing was written"):
        onnx_export.export_onnx(model.eval(), tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_mask2former_is_refused_naming_the_operator(tmp_path):
    from segkit.config.sections import InputSpec, ModelConfig
    from segkit.hub.onnx import OnnxExportError, export_onnx
    from segkit.labels import LabelSet
    from segkit.models.build import build_model

    model = build_model(ModelConfig(family="mask2former", size="tiny"), LabelSet(("background", "circle")),
                        spec=InputSpec("none"))
    with pytest.raises(OnnxExportError, match=r"mask2former cannot be exported.*aten::view"):
        export_onnx(model.eval(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_segkit_imports_without_the_onnx_extra_and_names_it():
    """With onnx and onnxruntime unimportable, segkit (export and predict included) still imports,
    and asking for ONNX says which pip command adds it."""
    code = (
        "import sys\n"
        # None in sys.modules: `import onnx` fails and importlib.util.find_spec says "not installed",
        # as for a missing package (torch asks find_spec about onnx at import)
        "sys.modules.update(onnx=None, onnxruntime=None, onnxscript=None)\n"
        "import segkit, segkit.hub.export, segkit.infer.predict, segkit.cli\n"
        "from segkit.infer.onnx_model import require\n"
        "try:\n    require('onnxruntime')\n"
        "except ValueError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pip install 'segkit[onnx]'" in done.stdout


def test_bench_script_smoke(tmp_path):
    from tests.test_bench import run

    rows = run("bench_onnx.py", tmp_path)
    assert [r["runtime"] for r in rows] == ["torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"]
    assert all(r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert rows[0]["agreement_vs_torch_fp32"] == 1.0 and rows[2]["agreement_vs_torch_fp32"] >= 0.999
