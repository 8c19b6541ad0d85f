"""One inference path: `segkit predict` reproduces, pixel for pixel, the predictions behind the
confusion matrix that training and `segkit evaluate` report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.cli import main as cli
from segkit.config.recipe import load_recipe
from segkit.config.sections import InputSpec, ModelConfig
from segkit.data import load_source, select_classes
from segkit.data.decode import read_label
from segkit.infer.scores import eval_transform, scores_for
from segkit.infer.segment import segment_images
from segkit.labels import LabelSet
from segkit.models import build_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def confusion(pred_dir: Path, truths: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """The confusion matrix of `segkit predict`'s masks against training-id truths (255 skipped)."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    for name, truth in truths.items():
        with Image.open(pred_dir / "masks" / f"{name}.png") as img:
            pred = np.asarray(img)
        assert pred.shape == truth.shape, name
        keep = truth != 255
        np.add.at(m, (truth[keep], pred[keep]), 1)
    return m


def test_predict_reproduces_the_training_report(finished_run: Path, tmp_path: Path):
    """The run's test split, written out as PNG files, through `segkit predict`."""
    recipe = load_recipe(finished_run / "recipe.yaml")
    source = load_source(recipe.data)
    selection = select_classes(source, recipe.classes)
    images, truths = tmp_path / "test", {}
    images.mkdir()
    for i, row in enumerate(source.splits["test"]):
        row["image"].convert("RGB").save(images / f"{i:03d}.png")
        truths[f"{i:03d}"] = selection.apply(read_label(row["label"], "test"))
    out = tmp_path / "pred"
    assert cli(["predict", str(finished_run), str(images), "--output", str(out)]) == 0
    reported = np.asarray(json.loads((finished_run / "metrics.json").read_text())["confusion_matrix"])
    assert np.array_equal(confusion(out, truths, selection.labels.num_classes), reported)


def test_predict_reproduces_evaluate_on_camvid_frames(shared_data: Path, tmp_path: Path):
    """Real 480x360 CamVid frames, fed whole (eval_mode none): a short run of the CamVid recipe on a
    few frames, then `segkit evaluate` and `segkit predict` on its test frames."""
    camvid = tmp_path / "camvid"
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for sub in (split, f"{split}annot"):
            (camvid / sub).mkdir(parents=True)
        for f in sorted((shared_data / "camvid" / split).glob("*.png"))[:n]:
            shutil.copy(f, camvid / split / f.name)
            shutil.copy(shared_data / "camvid" / f"{split}annot" / f.name, camvid / f"{split}annot" / f.name)
    recipe = RECIPES / "camvid-4class-segformer.yaml"
    sets = ["model.size=tiny", f"data.path={camvid}", "train.max_steps=2", "train.batch_size=2", "augment.crop_size=64",
            "train.num_workers=0", "train.tracker=none", "train.num_overlays=0"]
    run = tmp_path / "run"
    assert cli(["train", str(recipe), *[a for s in sets for a in ("--set", s)], "--output-dir", str(run)]) == 0
    assert cli(["evaluate", str(run), "--split", "test", "--output", str(tmp_path / "eval")]) == 0
    assert cli(["predict", str(run), str(camvid / "test"), "--output", str(tmp_path / "pred")]) == 0

    selection = select_classes(load_source(load_recipe(run / "recipe.yaml").data), load_recipe(run / "recipe.yaml").classes)
    truths = {f.stem: selection.apply(read_label(str(f), f.name)) for f in (camvid / "testannot").glob("*.png")}
    reported = np.asarray(json.loads((tmp_path / "eval" / "metrics.json").read_text())["confusion_matrix"])
    assert reported.sum() == sum(int((t != 255).sum()) for t in truths.values())
    assert np.array_equal(confusion(tmp_path / "pred", truths, 5), reported)


LABELS = LabelSet(names=("background", "a", "b"), background=0)


@pytest.mark.parametrize("family,mode", [("segformer", "none"), ("segformer", "pad"), ("vit", "none"),
                                         ("maskformer", "resize")])
def test_mixed_sizes_in_one_batch_score_as_if_alone(family: str, mode: str):
    """Images of other sizes in the same batch change nothing: same-shaped inputs run together,
    the others on their own, and pad mode's padding is cropped away."""
    torch.manual_seed(0)
    spec = InputSpec(mode, (64, 64) if mode == "resize" else None)
    model = build_model(ModelConfig(family=family, size="tiny", head="linear"), LABELS, spec=spec).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 96), (70, 50), (64, 96))]
    together = segment_images(model, images)
    alone = [segment_images(model, [im])[0] for im in images]
    for im, a, b in zip(images, together, alone):
        assert a.shape == (im.height, im.width) and np.array_equal(a, b)


def test_scores_come_back_at_the_label_size():
    model = build_model(ModelConfig(family="segformer", size="tiny"), LABELS, spec=InputSpec("resize", (64, 64))).eval()
    transform = eval_transform(model)
    image = Image.fromarray(np.zeros((45, 80, 3), dtype=np.uint8))
    assert tuple(transform(image).shape) == (3, 64, 64)  # resized for the model ...
    (i, scores), = scores_for(model, [transform(image)], [(45, 80)])
    assert i == 0 and tuple(scores.shape) == (3, 45, 80)  # ... and scored at the label's size


def test_saved_model_keeps_its_input_spec(tmp_path: Path):
    """The input spec travels with the model: in its config, and in the image processor that
    `pipeline` will use."""
    from segkit.models import load_model

    model = build_model(ModelConfig(family="segformer", size="tiny"), LABELS, spec=InputSpec("resize", (96, 128)))
    model.save_pretrained(tmp_path)
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["do_resize"] is True and processor["size"] == {"height": 96, "width": 128}
    assert load_model(tmp_path).input_spec == InputSpec("resize", (96, 128))
    unpadded = build_model(ModelConfig(family="segformer", size="tiny"), LABELS, spec=InputSpec("none"))
    unpadded.save_pretrained(tmp_path / "none")
    assert json.loads((tmp_path / "none" / "preprocessor_config.json").read_text())["do_resize"] is False
