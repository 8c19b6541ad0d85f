"""segkit predict, export and push on a real (tiny) trained run."""

from __future__ import annotations

import json

from segkit.cli import main as cli


def test_predict_reports_missing_folder(finished_run, tmp_path, capsys):
    assert cli(["predict", str(finished_run), str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_export_writes_model_card_that_reloads(finished_run, tmp_path):
    from transformers import SegformerForSemanticSegmentation

    out = tmp_path / "export"
    assert cli(["export", str(finished_run), "--output", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: image-segmentation" in card
    metrics = json.loads((finished_run / "metrics.json").read_text())
    for name in ("circle", "square"):
        assert f"| {name} | {metrics['per_class'][name]['iou']:.4f} |" in card
    assert (out / "confusion.png").is_file() and list((out / "overlays").glob("*.png"))
    model = SegformerForSemanticSegmentation.from_pretrained(out)
    assert model.config.id2label == {0: "background", 1: "circle", 2: "square"}


def test_push_offline_fails_with_a_clear_message(finished_run, tmp_path, capsys):
    assert cli(["push", str(finished_run), "someone/some-model"]) == 2
    err = capsys.readouterr().err
    assert "someone/some-model" in err and "export is ready" in err
