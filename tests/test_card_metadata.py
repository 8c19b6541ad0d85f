"""Model card metadata as the Hub reads it: `base_model` only for a Hub model id, and model-index
`dataset` fields in the dataset's own words (its split names, config and revision)."""

from __future__ import annotations

from huggingface_hub import ModelCard

from segkit.config.recipe import recipe_from_dict
from segkit.hub.card import front_matter, model_card
from segkit.labels import LabelSet

LABELS = LabelSet(("background", "car"), background=0)
METRICS = {"split": "val", "strict": {"mIoU": 0.5, "aAcc": 0.9}, "foreground": {"mIoU": 0.4},
           "per_class": {"background": {"iou": 0.6, "acc": 0.7}, "car": {"iou": 0.4, "acc": 0.5}}}


def recipe(data: dict, checkpoint: str | None = "nvidia/mit-b0"):
    model = {"family": "segformer", "checkpoint": checkpoint} if checkpoint else {"family": "segformer", "size": "tiny"}
    return recipe_from_dict({"data": data, "classes": {"select": ["car"]}, "model": model})


def dataset_of(front: dict) -> dict:
    return front["model-index"][0]["results"][0]["dataset"]


def test_base_model_only_for_a_hub_id(tmp_path):
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    for checkpoint in (str(folder), "./runs/old/model", "~/models/segformer"):
        front = front_matter(recipe({"format": "synthetic"}, checkpoint), METRICS, LABELS, "me/m", None, True)
        assert "base_model" not in front, checkpoint
    front = front_matter(recipe({"format": "synthetic"}), METRICS, LABELS, "me/m", None, True)
    assert front["base_model"] == "nvidia/mit-b0"
    card = model_card(recipe({"format": "synthetic"}, str(folder)), METRICS, LABELS, {"model_type": "segformer"})
    assert ModelCard(card).data.to_dict().get("base_model") is None


def test_ade20k_split_is_validation_on_the_parquet_branch():
    front = front_matter(recipe({"format": "ade20k"}), METRICS, LABELS, "me/m", None, True)
    assert dataset_of(front) == {"type": "zhoubolei/scene_parse_150", "name": "zhoubolei/scene_parse_150",
                                 "split": "validation", "config": "scene_parsing", "revision": "refs/convert/parquet"}
    test = front_matter(recipe({"format": "ade20k"}), {**METRICS, "split": "test"}, LABELS, "me/m", None, True)
    assert dataset_of(test)["split"] == "test"


def test_a_val_held_out_of_train_says_so():
    front = front_matter(recipe({"format": "sidewalk", "val_fraction": 0.1}), METRICS, LABELS, "me/m", None, True)
    data = dataset_of(front)
    assert data["split"] == "train" and data["args"] == {"held_out": "val: 10% of train, seed 0"}
    named = front_matter(recipe({"format": "folder", "path": "camvid", "splits": {"train": "train", "val": "val"}}),
                         METRICS, LABELS, "me/m", None, True)
    assert dataset_of(named)["split"] == "val"


def test_the_card_body_says_val_was_held_out_of_train():
    held = model_card(recipe({"format": "sidewalk", "val_fraction": 0.1}), METRICS, LABELS, {"model_type": "segformer"})
    assert "held out of the dataset's train split (10% of it, seed 0)" in held
    own = model_card(recipe({"format": "ade20k"}), METRICS, LABELS, {"model_type": "segformer"})
    assert "held out" not in own
