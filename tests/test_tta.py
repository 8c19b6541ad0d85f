"""Multi-scale + flip test-time augmentation through the one dispatch (`segkit.infer.segment`),
whole images and sliding windows, from `segkit evaluate` and `segkit predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.cli import main as cli
from segkit.infer.scores import batch_scores, describe_tta, parse_scales
from segkit.infer.segment import segment_images


def test_scales_parse_and_describe():
    assert parse_scales("scales=0.75,1.0,1.25") == (0.75, 1.0, 1.25) == parse_scales("0.75,1,1.25")
    assert parse_scales(None) == (1.0,)
    for bad in ("scales=", "scales=a,b", "scales=0,1"):
        with pytest.raises(ValueError, match="--tta"):
            parse_scales(bad)
    assert describe_tta() == "none" and describe_tta(flip=True) == "flip"
    assert describe_tta((0.75, 1.0, 1.25), True) == "scales 0.75,1,1.25 + flip"


@pytest.fixture(scope="module")
def model(finished_run):
    from segkit.models import load_model

    return load_model(finished_run).eval()


def image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_multi_scale_averages_probabilities_at_label_size(model):
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        one = batch_scores(model, pixels, [(50, 70), (50, 70)])
        same = batch_scores(model, pixels, [(50, 70), (50, 70)], scales=(1.0, 1.0))
        multi = batch_scores(model, pixels, [(50, 70), (50, 70)], flip=True, scales=(0.5, 1.0, 1.5))
    assert torch.allclose(same[0], one[0].softmax(0), atol=1e-6)  # one scale twice: its probabilities
    assert multi[0].shape == (model.labels.num_classes, 50, 70)
    assert torch.allclose(multi[0].sum(0), torch.ones(50, 70), atol=1e-5)  # still probabilities
    assert not torch.allclose(multi[0], same[0])  # the other scales and the flip did count


def test_tta_reaches_whole_images_and_sliding_windows(finished_run, monkeypatch):
    import segkit.infer.sliding as sliding
    from segkit.config.sections import InputSpec
    from segkit.models import load_model

    model = load_model(finished_run).eval()
    model.set_input_spec(InputSpec("none", window=(64, 64)))  # fed at its own scale: large images slide
    small, large = image(60, 50), image(300, 260, seed=1)  # large: above 4 training crops, so it slides
    plain = segment_images(model, [small, large])
    twice = segment_images(model, [small, large], scales=(1.0, 1.0))
    assert np.array_equal(plain[0], twice[0])  # the same view averaged: the same mask
    # windows blend probabilities instead of raw scores then, so only the overlaps may differ
    assert (plain[1] == twice[1]).mean() > 0.9
    windows = []
    spy = lambda *a, **k: windows.append((a[1].shape, k)) or batch_scores(*a, **k)  # noqa: E731
    monkeypatch.setattr(sliding, "batch_scores", spy)
    tta = segment_images(model, [small, large], flip=True, scales=(0.75, 1.0, 1.25))
    assert [m.shape for m in tta] == [(50, 60), (260, 300)]
    # each window of the large image goes through the TTA itself: memory stays one band's
    assert windows and all(k == {"flip": True, "scales": (0.75, 1.0, 1.25)} for _, k in windows)
    assert max(shape[-1] for shape, _ in windows) < 300


def test_evaluate_and_predict_take_tta(finished_run: Path, tmp_path: Path):
    out = tmp_path / "eval"
    assert cli(["evaluate", str(finished_run), "--split", "test", "--output", str(out),
                "--tta", "scales=0.75,1.0,1.25", "--flip"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "scales 0.75,1,1.25 + flip"
    assert "scales 0.75,1,1.25 + flip" in (out / "report.html").read_text()
    assert json.loads((finished_run / "metrics.json").read_text())["tta"] == "none"
    images = tmp_path / "images"
    images.mkdir()
    image(40, 48).save(images / "a.png")
    assert cli(["predict", str(finished_run), str(images), "--output", str(tmp_path / "pred"), "--workers", "0",
                "--tta", "scales=0.5,1.0", "--flip"]) == 0
    with Image.open(tmp_path / "pred" / "masks" / "a.png") as mask:
        assert mask.size == (40, 48)
    assert cli(["evaluate", str(finished_run), "--tta", "scales=x"]) == 2  # a clear error
