"""Every recipe starts from a replica of the checkpoint it names, as a new user would: the published
config.json (its architecture class and its id2label) and preprocessor_config.json from
tests/fixtures/hub-configs/, with random weights. Each one trains a step, scores step 0, exports,
reloads in `pipeline("image-segmentation")` and runs `segkit predict`; the banner's head line is
checked against the classes that really are classes of that checkpoint, listed here by hand.

Where the real size is too slow for one CPU step, the replica has fewer layers and narrower stages,
and keeps its head type and label table (`REDUCE`). A recipe that names a checkpoint without a
replica fails here: add the replica (with its provenance in the fixtures' README) first.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from segkit.cli import main as cli
from segkit.config.recipe import load_recipe
from tests.test_recipes import RECIPES, build_ade20k, build_camvid, build_sidewalk

REPLICAS = Path(__file__).parent / "fixtures" / "hub-configs"

REDUCE: dict[str, dict] = {
    # 101 M and 30 M parameters: one Swin stage each, narrow, with the tiny decoder sizes of
    # segkit's `size: tiny`; the 150-class detectron2 table and the query classifier stay.
    "facebook/maskformer-swin-base-ade": dict(
        backbone_config=dict(depths=[1, 1, 1, 1], embed_dim=32, hidden_size=256, num_heads=[1, 2, 4, 8]),
        decoder_config=dict(d_model=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128,
                            encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128),
        fpn_feature_size=64, mask_feature_size=64, num_queries=20),
    "facebook/maskformer-swin-tiny-ade": dict(
        backbone_config=dict(depths=[1, 1, 1, 1], embed_dim=32, hidden_size=256, num_heads=[1, 2, 4, 8]),
        decoder_config=dict(d_model=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128,
                            encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128),
        fpn_feature_size=64, mask_feature_size=64, num_queries=20),
    "facebook/mask2former-swin-base-ade-semantic": dict(
        backbone_config=dict(depths=[1, 1, 1, 1], embed_dim=32, hidden_size=256, num_heads=[1, 2, 4, 8]),
        feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128, encoder_layers=1,
        decoder_layers=3, num_attention_heads=4, dim_feedforward=128, num_queries=20, train_num_points=1024),
    # 22 M: the real width (384, 6 heads), 4 of its 12 layers
    "facebook/dinov2-small": dict(num_hidden_layers=4),
    # 86 M: 4 layers at a quarter of the width
    "google/vit-base-patch16-224": dict(num_hidden_layers=4, hidden_size=192, num_attention_heads=3,
                                        intermediate_size=768),
    # nvidia/mit-b0 (3.7 M) runs at its real size
}
"""Per checkpoint, config values replaced to make one CPU step take about a second."""


@dataclass
class Case:
    recipe: str
    checkpoint: str
    head: str
    """What the banner's head line must say: `carried N of C`, or `backbone only`."""
    new: list[str] = field(default_factory=list)
    """Chosen classes that are no class of the checkpoint (they start at random)."""
    sets: list[str] = field(default_factory=list)


# Hand-checked against the label tables in tests/fixtures/hub-configs (detectron2's ADE names for
# MaskFormer, the short HF names for Mask2Former), not computed by segkit's matcher:
CASES = [
    # windowpane is detectron2's "window ", painting its "painting, picture"
    Case("ade20k-5class-maskformer-swin-base.yaml", "facebook/maskformer-swin-base-ade", "carried 6 of 6"),
    # sidewalk's human-person, vehicle-car, vehicle-bicycle are ADE's person, car, bicycle;
    # ADE has signboard and traffic light, but no traffic sign
    Case("sidewalk-4class-maskformer-swin-base.yaml", "facebook/maskformer-swin-base-ade", "carried 4 of 5",
         new=["traffic sign"]),
    # CamVid's pedestrian, bicyclist and sign_symbol have other names in ADE (person, signboard)
    Case("camvid-4class-maskformer-swin-tiny.yaml", "facebook/maskformer-swin-tiny-ade", "carried 2 of 5",
         new=["pedestrian", "bicyclist", "sign_symbol"]),
    Case("ade20k-5class-dinov2-small.yaml", "facebook/dinov2-small", "backbone only"),
    Case("sidewalk-segformer-b0.yaml", "nvidia/mit-b0", "backbone only"),
    # the other checkpoints the README names, on the recipe they would go into
    Case("ade20k-5class-maskformer-swin-base.yaml", "facebook/mask2former-swin-base-ade-semantic", "carried 6 of 6",
         sets=["model.family=mask2former"]),
    Case("ade20k-5class-dinov2-small.yaml", "google/vit-base-patch16-224", "backbone only"),
]

CROP = 64
"""Crop and eval size: a multiple of 32 (Swin, SegFormer); DINOv2's 14-px patches take 56."""


def replica(repo_id: str, root: Path) -> Path:
    """A checkpoint folder in `repo_id`'s published layout: its architecture class built from its
    config.json (reduced per REDUCE), random weights, its preprocessor_config.json as published."""
    src = REPLICAS / repo_id.replace("/", "--")
    assert (src / "config.json").is_file(), (
        f"{repo_id} has no replica in tests/fixtures/hub-configs/: add its config.json and "
        "preprocessor_config.json, with their provenance in the README there")
    folder = root / src.name
    if folder.is_dir():
        return folder
    config_dict = json.loads((src / "config.json").read_text())
    for key, value in REDUCE.get(repo_id, {}).items():
        config_dict[key] = {**config_dict.get(key, {}), **value} if isinstance(value, dict) else value
    arch = config_dict["architectures"][0]
    config = transformers.AutoConfig.for_model(**config_dict)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    model.save_pretrained(folder)
    shutil.copy2(src / "preprocessor_config.json", folder / "preprocessor_config.json")
    return folder


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("replicas")


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> dict[str, Path]:
    return {"ade20k": build_ade20k(tmp_path_factory.mktemp("ade20k")),
            "sidewalk": build_sidewalk(tmp_path_factory.mktemp("sidewalk")),
            "folder": build_camvid(tmp_path_factory.mktemp("camvid"))}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))


def test_every_recipe_names_a_checkpoint_with_a_replica_or_trains_from_scratch():
    named = {c.recipe for c in CASES}
    for path in RECIPES:
        recipe = load_recipe(path)
        if recipe.model.checkpoint is None:
            assert recipe.model.size, f"{path.name}: no checkpoint and no size"
            continue
        assert (REPLICAS / recipe.model.checkpoint.replace("/", "--") / "config.json").is_file(), (
            f"{path.name} names {recipe.model.checkpoint}, which has no replica in tests/fixtures/hub-configs/")
        assert path.name in named, f"{path.name}: add it to CASES in this file"
        assert any(c.checkpoint == recipe.model.checkpoint for c in CASES if c.recipe == path.name)


def head_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("  head ")]
    assert lines, f"the banner has no head line:\n{out[:2000]}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.recipe.removesuffix('.yaml')}@{c.checkpoint.split('/')[1]}")
def test_recipe_runs_from_its_checkpoint_replica(case: Case, replicas, local_data, tmp_path, capsys):
    path = next((p for p in RECIPES if p.name == case.recipe), None)
    assert path is not None, f"recipes/{case.recipe} is gone"
    recipe = load_recipe(path)
    folder = replica(case.checkpoint, replicas)
    crop = 56 if "dinov2" in case.checkpoint else CROP
    sets = [f"model.checkpoint={folder}", f"data.path={local_data[recipe.data.format]}", "train.max_steps=1",
            f"augment.crop_size={crop}", f"augment.eval_size={crop}", "train.batch_size=2", "train.num_workers=0",
            "train.tracker=none", "train.num_overlays=1", "train.eval_at_start=true", "train.mixed_precision='no'",
            *case.sets]
    run = tmp_path / "run"
    code = cli(["train", str(path), *[a for s in sets for a in ("--set", s)], "--output-dir", str(run)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]

    line = head_line(captured.out)
    with capsys.disabled():  # `pytest -s` shows what each checkpoint carries (the README's table)
        print(f"\n{case.recipe} @ {case.checkpoint}:{line.replace(str(folder), case.checkpoint)}")
    labels = json.loads((run / "model" / "config.json").read_text())["id2label"]
    names = [labels[str(i)] for i in range(len(labels))]
    if case.head == "backbone only":
        assert "backbone only, head new" in line, line
        assert "from the checkpoint" not in line and "<-" not in line  # nothing of an ImageNet head is "carried"
    else:
        n, c = case.head.removeprefix("carried ").split(" of ")
        assert f"{n} of {c} classifier rows from the checkpoint" in line, line
        assert int(c) == len(names)
        for name in names:
            assert (f"{name} (new)" in line) == (name in case.new), (name, line)
    assert "step 0 (before training)" in captured.out
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and "eval" in log[0]

    assert cli(["export", str(run)]) == 0
    family = load_recipe(run / "recipe.yaml").model.family
    subtask = {"subtask": "semantic"} if family in ("maskformer", "mask2former") else {}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (crop, crop + 32, 3), dtype=np.uint8))
    segments = transformers.pipeline("image-segmentation", model=str(run / "export"))(image, **subtask)
    assert segments and {s["label"] for s in segments} <= set(names)

    photos = tmp_path / "photos"
    photos.mkdir()
    image.save(photos / "a.png")
    assert cli(["predict", str(run), str(photos), "--output", str(tmp_path / "pred"), "--workers", "0"]) == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "masks" / "a.png"))
    assert mask.shape == (crop, crop + 32) and int(mask.max()) < len(names)
