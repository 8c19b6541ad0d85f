"""Export and push: every family's export loads with plain transformers and gives, through
`pipeline`, the masks of `segkit predict`; the card parses and carries metrics.json's figures;
export never deletes what it did not write; push leaves visibility to the Hub, keeps tokens out of
every file, and leaves pictures of restricted data out of a public repo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.cli import main as cli
from tests.test_train import write_recipe

FAMILIES = {
    # family: (model settings, augment settings, transformers class that loads the export)
    "segformer": ({"family": "segformer"}, {"eval_mode": "none"}, "AutoModelForSemanticSegmentation"),
    "maskformer": ({"family": "maskformer"}, {"eval_mode": "none"}, "MaskFormerForInstanceSegmentation"),
    "mask2former": ({"family": "mask2former"}, {"eval_mode": "none"}, "Mask2FormerForUniversalSegmentation"),
    "vit": ({"family": "vit", "head": "multilevel"}, {"eval_mode": "resize", "eval_size": 64},
            "AutoModelForSemanticSegmentation"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(family, run folder, export folder) of a short tiny run."""
    family = request.param
    model, augment, _ = FAMILIES[family]
    tmp = tmp_path_factory.mktemp(family)
    recipe = write_recipe(tmp, model={**model, "size": "tiny"}, augment={"scale": [0.8, 1.2], **augment},
                          loss={"class_weights": "sqrt_inverse"},
                          train={"max_steps": 80, "eval_every": 80, "tracker": "none", "lr": 0.003})
    assert cli(["train", str(recipe), "--output-dir", str(tmp / "run")]) == 0
    assert cli(["export", str(tmp / "run"), "--output", str(tmp / "export")]) == 0
    return family, tmp / "run", tmp / "export"


def sample_images() -> list[Image.Image]:
    """Synthetic test images at their own size, and a stretched one off the model's input grid."""
    from segkit.data import make_synthetic

    rows = make_synthetic(3, 64, seed=5, split="extra")
    images = [r["image"].convert("RGB") for r in rows]
    return images + [images[0].resize((90, 70))]


def pipeline_map(results: list[dict], label2id: dict[str, int], size: tuple[int, int]) -> np.ndarray:
    """pipeline()'s one-mask-per-class answer as one class-id map."""
    out = np.full(size, 255, dtype=np.uint8)
    for r in results:
        out[np.asarray(r["mask"]) > 0] = label2id[r["label"]]
    return out


def test_export_loads_with_transformers_and_pipeline_matches_predict(exported, tmp_path):
    import transformers
    from transformers import pipeline

    family, run, export = exported
    hf = getattr(transformers, FAMILIES[family][2]).from_pretrained(export)
    assert hf.config.id2label == {0: "background", 1: "circle", 2: "square"}

    images = sample_images()
    folder = tmp_path / "images"
    folder.mkdir()
    for i, im in enumerate(images):
        im.save(folder / f"{i}.png")
    assert cli(["predict", str(export), str(folder), "--output", str(tmp_path / "pred")]) == 0

    segmenter = pipeline("image-segmentation", model=str(export))
    subtask = {"subtask": "semantic"} if family in ("maskformer", "mask2former") else {}
    seen = set()
    for i, im in enumerate(images):
        with Image.open(tmp_path / "pred" / "masks" / f"{i}.png") as m:
            ours = np.asarray(m)
        theirs = pipeline_map(segmenter(im, **subtask), hf.config.label2id, (im.height, im.width))
        assert np.array_equal(ours, theirs), f"{family}: image {i}: {(ours != theirs).mean():.4f} of pixels differ"
        seen |= set(np.unique(ours).tolist())
    # A tiny MaskFormer trained from scratch decodes every query alike for hundreds of steps and paints
    # one class; the score test below checks its numbers instead.
    if family != "maskformer":
        assert len(seen) >= 2, f"{family}: the trained model predicts one class only; the comparison says little"


def test_scores_are_transformers_post_processed_scores(exported):
    """Not just the argmax: segkit's class scores at image size are the `segmentation_scores` of the
    family's own image processor and post-processor, number for number."""
    import torch
    import transformers
    from transformers import AutoImageProcessor

    from segkit.infer.scores import eval_transform, scores_for
    from segkit.models import load_model

    family, _, export = exported
    ours = load_model(export)
    hf = getattr(transformers, FAMILIES[family][2]).from_pretrained(export).eval()
    processor = AutoImageProcessor.from_pretrained(export)
    transform = eval_transform(ours)
    for im in sample_images():
        (_, mine), = scores_for(ours, [transform(im)], [(im.height, im.width)])
        with torch.no_grad():
            outputs = hf(**processor(images=im, return_tensors="pt"))
        theirs = processor.post_process_semantic_segmentation(outputs, target_sizes=[(im.height, im.width)],
                                                              return_segmentation_scores=True)[0]
        torch.testing.assert_close(mine, theirs.segmentation_scores.float(), rtol=1e-4, atol=1e-5)


def test_card_parses_and_carries_the_run_metrics(exported):
    from huggingface_hub import ModelCard

    family, run, export = exported
    card = ModelCard.load(export / "README.md")
    metrics = json.loads((run / "metrics.json").read_text())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-segmentation"
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert {r.task_type for r in card.data.eval_results} == {"image-segmentation"}
    assert {r.dataset_split for r in card.data.eval_results} == {metrics["split"]}
    assert results["mIoU (all 3 classes)"] == metrics["strict"]["mIoU"]
    assert results["mIoU (foreground)"] == metrics["foreground"]["mIoU"]
    for name, c in metrics["per_class"].items():
        assert results[f"IoU {name}"] == c["iou"]
    text = (export / "README.md").read_text()
    assert "| 1 | circle | circle |" in text  # the class mapping from the dataset's classes
    assert "![confusion matrix](confusion.png)" in text and (export / "confusion.png").is_file()
    assert "](overlays/000.png)" in text and (export / "overlays" / "000.png").is_file()
    assert ('subtask="semantic"' in text) == (family in ("maskformer", "mask2former"))


def test_linear_vit_head_is_not_advertised_for_pipeline(tmp_path):
    recipe = write_recipe(tmp_path, model={"family": "vit", "size": "tiny", "head": "linear"},
                          train={"max_steps": 2, "tracker": "none"})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "run"), "--set", "model.license=mit"]) == 0
    assert cli(["export", str(tmp_path / "run"), "--output", str(tmp_path / "export")]) == 0
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert card.data.library_name == "segkit" and card.data.license == "mit"
    assert "pipeline(" not in card.text and "segkit predict" in card.text


def test_export_refuses_a_folder_it_did_not_write(finished_run, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    assert cli(["export", str(finished_run), "--output", str(precious)]) == 2
    assert "not written by `segkit export`" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "do not delete"
    assert cli(["export", str(finished_run), "--output", "."]) == 2  # the working directory, never
    out = tmp_path / "export"
    assert cli(["export", str(finished_run), "--output", str(out)]) == 0
    (out / "stale.txt").write_text("from an older export")
    assert cli(["export", str(finished_run), "--output", str(out)]) == 0  # an export replaces an export
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()


class RecordingApi:
    """Stands in for HfApi: records what push would send."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kw):
        RecordingApi.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def repo_info(self, repo_id):  # a new repo, as asked (the Hub's default is public)
        private = [kw["private"] for name, kw in RecordingApi.calls if name == "create_repo"][-1]
        return type("Info", (), {"private": bool(private)})()

    def upload_folder(self, **kw):
        files = sorted(str(p.relative_to(kw["folder_path"])) for p in Path(kw["folder_path"]).rglob("*") if p.is_file())
        RecordingApi.calls.append(("upload_folder", {**kw, "files": files}))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/1"})()


@pytest.fixture
def api(monkeypatch):
    import segkit.hub.export

    RecordingApi.calls = []
    monkeypatch.setattr(segkit.hub.export, "HfApi", RecordingApi)
    return RecordingApi


def test_push_leaves_visibility_to_the_hub_unless_told(finished_run, api):
    assert cli(["push", str(finished_run), "me/model"]) == 0
    assert cli(["push", str(finished_run), "me/model", "--private"]) == 0
    assert cli(["push", str(finished_run), "me/model", "--public"]) == 0
    assert [kw["private"] for name, kw in api.calls if name == "create_repo"] == [None, True, False]
    uploaded = [kw for name, kw in api.calls if name == "upload_folder"][0]
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"} <= set(uploaded["files"])


def test_pictures_of_non_commercial_data_stay_out_of_a_public_push(tmp_path, api, capsys):
    recipe = write_recipe(tmp_path, data={"license": "cc-by-nc-4.0"}, train={"max_steps": 2, "tracker": "none"})
    run = tmp_path / "run"
    assert cli(["train", str(recipe), "--output-dir", str(run)]) == 0
    assert list((run / "overlays").glob("*.png"))
    assert cli(["push", str(run), "me/model"]) == 0
    assert "--with-overlays" in capsys.readouterr().out
    assert cli(["push", str(run), "me/model", "--with-overlays"]) == 0
    assert cli(["push", str(run), "me/model", "--private"]) == 0
    shipped = [any(f.startswith("overlays/") for f in kw["files"]) for name, kw in api.calls if name == "upload_folder"]
    assert shipped == [False, True, True]


def test_train_pushes_at_the_end_and_no_file_holds_the_token(tmp_path, api, monkeypatch):
    token = "hf_segkitTESTtoken0123456789abcdefXYZ"
    monkeypatch.setenv("HF_TOKEN", token)
    recipe = write_recipe(tmp_path, train={"max_steps": 2, "tracker": "tensorboard"})
    run = tmp_path / "run"
    assert cli(["train", str(recipe), "--output-dir", str(run), "--push-to-hub", "me/model"]) == 0
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    written = [p for p in run.rglob("*") if p.is_file()]
    assert len(written) > 10 and (run / "export" / "README.md") in written
    assert not [p for p in written if token.encode() in p.read_bytes()]


def test_push_network_failure_is_one_clear_message(finished_run, fake_hub, capsys):
    fake_hub.offline = True
    assert cli(["push", str(finished_run), "me/model"]) == 2
    err = capsys.readouterr().err
    assert "Could not push to me/model" in err and "ConnectError" in err and "Traceback" not in err
    assert (finished_run / "export" / "model.safetensors").is_file()  # the export is kept
