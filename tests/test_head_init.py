"""A classifier for new classes built from the checkpoint's rows: kept classes take their own row,
merged classes and background are fitted from their members', MaskFormer keeps its "no object"
row; `head_init: random` and a checkpoint without any chosen class start at random, and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segkit.cli import main as cli
from segkit.config.sections import ClassesConfig, DataConfig, InputSpec, ModelConfig
from segkit.data import load_source, select_classes
from segkit.labels import LabelSet
from segkit.models import build_model, load_model
from segkit.models.head_init import CarriedHead, carries, new_rows
from tests.test_train import write_recipe

SHAPES = ["circle", "square", "triangle", "stripe"]
FAMILIES = [("segformer", None), ("maskformer", None), ("mask2former", None), ("vit", "multilevel"), ("vit", "linear")]


def test_rows_follow_the_selection_sources():
    checkpoint = LabelSet(("background", "circle", "square", "triangle", "stripe"), background=0)
    carried = CarriedHead(torch.randn(5, 8), torch.randn(5), checkpoint)
    source = load_source(DataConfig(format="synthetic", synthetic_samples=4, synthetic_size=32))
    merged = select_classes(source, ClassesConfig(select={"circle": "circle", "angular": ["square", "triangle"]}))
    # background is made of the source's background and stripe, each a checkpoint class
    assert carried.rows_for(merged.labels) == [[0, 4], [1], [2, 3]]
    assert carries(carried.rows_for(merged.labels), merged.labels)
    unknown = LabelSet(("background", "car"), background=0, sources=(("sky", "road"), ("car",)))
    assert carried.rows_for(unknown) == [[], []] and not carries(carried.rows_for(unknown), unknown)
    background_only = LabelSet(("background", "car"), background=0, sources=(("circle",), ("car",)))
    assert not carries(carried.rows_for(background_only), background_only)  # background alone is no reason


def test_a_segkit_checkpoint_counts_its_own_sources():
    """A class the checkpoint merged (vehicle = car + truck) is found by its members' names too."""
    checkpoint = LabelSet(("background", "vehicle"), background=0, sources=(("sky",), ("car", "truck")))
    carried = CarriedHead(torch.randn(2, 4), torch.randn(2), checkpoint)
    wanted = LabelSet(("background", "car"), background=0, sources=(("sky", "road"), ("car",)))
    assert carried.rows_for(wanted) == [[0], [1]]


def test_fit_reproduces_log_sum_exp_and_keeps_single_rows_exactly():
    torch.manual_seed(0)
    checkpoint = LabelSet(tuple("abcdef"))
    carried = CarriedHead(torch.randn(6, 5), torch.randn(6), checkpoint)
    features = torch.randn(4000, 5) * 0.3
    rows = [[0], [1, 2], [3, 4, 5]]
    weight, bias = new_rows(features, carried, rows, "fit")
    assert torch.equal(weight[0], carried.weight[0]) and bias[0] == carried.bias[0]
    logits = features @ carried.weight.T + carried.bias
    grouped = torch.stack([torch.logsumexp(logits[:, r], 1) for r in rows], 1)
    fitted = features @ weight.T + bias
    assert (fitted.argmax(1) == grouped.argmax(1)).float().mean() > 0.95
    mean_w, mean_b = new_rows(features, carried, rows, "mean")
    assert torch.allclose(mean_w[1], carried.weight[[1, 2]].mean(0))
    assert torch.isclose(mean_b[2], carried.bias[[3, 4, 5]].mean() + torch.log(torch.tensor(3.0)))


@pytest.fixture(scope="module", params=FAMILIES, ids=[f"{f}-{h}" if h else f for f, h in FAMILIES])
def checkpoint(request, tmp_path_factory) -> tuple[str, str | None, Path]:
    """A tiny model of each family trained a few steps on all four shapes (+ background)."""
    family, head = request.param
    tmp = tmp_path_factory.mktemp(family)
    model = {"family": family, "size": "tiny", **({"head": head} if head else {})}
    recipe = write_recipe(tmp, classes={"select": SHAPES}, model=model,
                          train={"max_steps": 6, "tracker": "none", "num_overlays": 0})
    assert cli(["train", str(recipe), "--output-dir", str(tmp / "run")]) == 0
    return family, head, tmp / "run" / "model"


def grouped_agreement(old, new, groups: list[list[int]], images: torch.Tensor) -> float:
    """Share of pixels where the new model's class is the old model's grouped class (group
    probability = sum of the members' probabilities)."""
    with torch.no_grad():
        a, b = old(images).scores, new(images).scores
    old_probs = a.softmax(1) if not old.has_own_loss else a
    grouped = torch.stack([old_probs[:, g].sum(1) for g in groups], 1)
    return (grouped.argmax(1) == b.argmax(1)).float().mean().item()


def test_each_family_starts_from_the_checkpoint_rows(checkpoint, tmp_path: Path):
    from segkit.infer.scores import eval_transform
    from segkit.models.head_init import install

    family, head, folder = checkpoint
    old = load_model(folder)
    source = load_source(DataConfig(format="synthetic", synthetic_samples=8, synthetic_size=64))
    selection = select_classes(source, ClassesConfig(select={"circle": "circle", "angular": ["square", "triangle"]}))
    cfg = ModelConfig(family=family, checkpoint=str(folder), **({"head": head} if head else {}))
    new = build_model(cfg, selection.labels, spec=old.input_spec)
    carried = new.carried_head
    assert carried is not None and carried.labels.names == old.labels.names
    rows = carried.rows_for(selection.labels)
    assert rows == [[0, 4], [1], [2, 3]]  # background <- background + stripe; circle; angular <- square + triangle
    transform = eval_transform(new)
    images = torch.stack([transform(source.splits["train"][i]["image"].convert("RGB")) for i in range(8)])
    install(new, carried, rows, [images])
    new.eval()
    old_rows = old.get_submodule(old.classifier_name).weight.detach()
    new_rows_ = new.get_submodule(new.classifier_name).weight.detach()
    assert torch.equal(new_rows_[1], old_rows[1])  # circle: its own row, exactly
    if family in ("maskformer", "mask2former"):
        assert torch.equal(new_rows_[-1], old_rows[-1])  # "no object" is the checkpoint's
    # tiny models trained for 6 steps are close to ties everywhere, so a sliver of pixels may flip
    assert grouped_agreement(old.eval(), new, rows, images) > 0.9


def test_training_from_a_checkpoint_carries_the_head_and_scores_step_zero(checkpoint, tmp_path: Path, capsys):
    family, head, folder = checkpoint
    if head == "linear" or family == "mask2former":
        pytest.skip("one run per head kind is enough here: segformer, maskformer and UperNet")
    model = {"family": family, "checkpoint": str(folder), "size": None, **({"head": head} if head else {})}
    recipe = write_recipe(tmp_path, classes={"select": {"circle": "circle", "angular": ["square", "triangle"]}},
                          model=model, train={"max_steps": 2, "tracker": "none", "num_overlays": 0})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    head_line = next(line for line in out.splitlines() if line.startswith("  head "))
    assert "3 of 3 classifier rows from the checkpoint" in head_line
    assert "background <- background + stripe" in head_line and "angular <- square + triangle" in head_line
    assert "step 0 (before training)" in out
    start = json.loads((tmp_path / "run" / "start.json").read_text())
    assert set(start["per_class"]) == {"background", "circle", "angular"}
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and "eval" in log[0]


def test_random_head_init_and_unknown_classes_start_at_random(checkpoint, tmp_path: Path, capsys):
    family, head, folder = checkpoint
    if family != "segformer":
        pytest.skip("the fallback does not depend on the family")
    base = {"family": family, "checkpoint": str(folder), "size": None}
    recipe = write_recipe(tmp_path, classes={"select": ["circle"]}, model={**base, "head_init": "random"},
                          train={"max_steps": 1, "tracker": "none", "num_overlays": 0})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "head " not in out and "step 0" not in out and not (tmp_path / "a" / "start.json").exists()

    labels = LabelSet(("background", "car"), background=0, sources=(("sky",), ("car",)))
    model = build_model(ModelConfig(family=family, checkpoint=str(folder)), labels, spec=InputSpec("none"))
    assert model.carried_head is not None and not carries(model.carried_head.rows_for(labels), labels)
    # a checkpoint whose classes are none of the data's: only its other weights carry over
    elsewhere = tmp_path / "elsewhere"
    build_model(ModelConfig(family=family, size="tiny"), LabelSet(("sky", "road"))).save_pretrained(elsewhere)
    recipe = write_recipe(tmp_path, classes={"select": ["circle"]},
                          model={"family": family, "checkpoint": str(elsewhere), "size": None},
                          train={"max_steps": 1, "tracker": "none", "num_overlays": 0})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "b")]) == 0
    assert "random classifier: none of circle is a class of the checkpoint" in capsys.readouterr().out


# id2label of the ADE20K checkpoints (nvidia/segformer-*-finetuned-ade-*, facebook/maskformer-swin-*-ade),
# as their config.json files publish it: objectInfo150's first names, "bed " with its space.
ADE_CHECKPOINT_NAMES = (
    "wall|building|sky|floor|tree|ceiling|road|bed |windowpane|grass|cabinet|sidewalk|person|earth|door|table|"
    "mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|field|armchair|seat|fence|desk|"
    "rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|signboard|chest of drawers|counter|sand|sink|"
    "skyscraper|fireplace|refrigerator|grandstand|path|stairs|runway|case|pool table|pillow|screen door|stairway|"
    "river|bridge|bookcase|blind|coffee table|toilet|flower|book|hill|bench|countertop|stove|palm|kitchen island|"
    "computer|swivel chair|boat|bar|arcade machine|hovel|bus|towel|light|truck|tower|chandelier|awning|streetlight|"
    "booth|television receiver|airplane|dirt track|apparel|pole|land|bannister|escalator|ottoman|bottle|buffet|"
    "poster|stage|van|ship|fountain|conveyer belt|canopy|washer|plaything|swimming pool|stool|barrel|basket|"
    "waterfall|tent|bag|minibike|cradle|oven|ball|food|step|tank|trade name|microwave|pot|animal|bicycle|lake|"
    "dishwasher|screen|blanket|sculpture|hood|sconce|vase|traffic light|tray|ashcan|fan|pier|crt screen|plate|"
    "monitor|bulletin board|shower|radiator|glass|clock|flag").split("|")


def test_the_ade20k_recipe_carries_every_row_of_an_ade_checkpoint():
    """The ADE20K preset's names are the ADE checkpoints' names: the five chosen classes take their
    own rows and background is built from all 145 others."""
    from segkit.data.source import Source
    from segkit.data.sources.hub_datasets import ADE20K_NAMES

    names = {0: "other"} | {i + 1: n.split(";")[0] for i, n in enumerate(ADE20K_NAMES)}
    aliases = {i + 1: n.split(";")[1:] for i, n in enumerate(ADE20K_NAMES)}
    source = Source({}, names, [0], "ade20k", aliases)
    selection = select_classes(source, ClassesConfig(select=["windowpane", "person", "door", "table", "painting"]))
    checkpoint = LabelSet(tuple(ADE_CHECKPOINT_NAMES))
    rows = CarriedHead(torch.zeros(151, 4), torch.zeros(151), checkpoint).rows_for(selection.labels)
    assert rows[1:] == [[8], [12], [14], [15], [22]]
    assert len(rows[0]) == 145 and not set(rows[0]) & {8, 12, 14, 15, 22}
