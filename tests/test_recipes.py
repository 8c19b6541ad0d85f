"""Every recipe in recipes/ is checked and trained: found by glob, so a new recipe is tested too.

Each recipe is loaded and checked against the project's recipe rules, then trained for two
optimizer steps through `segkit train` itself. A tiny model is swapped in with the `--set`
overrides a user would type (litgpt's test_config_hub does the same for its config hub). The data
is built locally in the recipe's own format and in the exact schema of the Hub dataset it names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from segkit.cli import main as cli
from segkit.config.recipe import Recipe, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
IMAGE_H, IMAGE_W = 64, 96
"""Generated images: small, and multiples of 32 so that every family takes them whole."""
CROP = 64
"""Training crop (and eval size) at tiny size: a multiple of 32 (Swin windows, SegFormer) and of
the tiny ViT's 8-px patches (segkit/models/vit.py, ENCODERS["tiny"])."""

# Source ids of the classes the recipes select, checked against the datasets' own tables (not read
# from segkit's): ADE20K objectInfo150.txt, segments/sidewalk-semantic's id2label.json, and the
# CamVid table in shared/data/README.md. test_local_ids_match_segkits_tables cross-checks segkit.
ADE20K_IDS = {"windowpane": 9, "person": 13, "door": 15, "table": 16, "painting": 23}
ADE20K_OTHER_IDS = [0, 1, 4, 6]  # other (unannotated), wall, floor, ceiling
SIDEWALK_IDS = {"person": 8, "car": 10, "bicycle": 15, "traffic sign": 26}
SIDEWALK_OTHER_IDS = [0, 1, 2, 30]  # unlabeled, flat-road, flat-sidewalk, sky
CAMVID_IDS = {"sign_symbol": 6, "car": 8, "pedestrian": 9, "bicyclist": 10}
CAMVID_OTHER_IDS = [0, 1, 2, 3, 4, 5, 7, 11]  # every other class (the 11-class recipe scores them all)

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))  # class statistics never leak between tests


def test_recipes_are_found():
    assert len(RECIPES) >= 1, "recipes/*.yaml matched nothing: the tests below would silently run for none"


def selected_names(recipe: Recipe) -> list[str]:
    """Training class names in id order, as `select_classes` spells them (background first)."""
    select = recipe.classes.select
    assert select is not None, "classes.select: null keeps every source class; give this test its names"
    names = list(select) if isinstance(select, dict) else [str(s).strip() for s in select]
    return ([recipe.classes.background_name] if recipe.classes.others == "background" else []) + names


# -- 1. every recipe loads and follows the project's recipe rules -----------------------------------

@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_starts_with_its_command(path: Path):
    recipe = load_recipe(path)
    assert recipe.name
    first = path.read_text().splitlines()[0]
    assert re.match(rf"# segkit train recipes/{re.escape(path.name)}(\s|$)", first), (
        f"{path.name}: the first line must be the command that runs it, "
        f"'# segkit train recipes/{path.name}'; it is {first!r}")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_background_recipes_turn_on_the_rare_class_defaults(path: Path):
    """Selected classes against a `background` of everything else are rare by construction."""
    from segkit.models import FAMILIES

    recipe = load_recipe(path)
    if recipe.classes.others != "background":
        pytest.skip("others: ignore has no background class to dominate")
    assert recipe.augment.cat_max_ratio < 1, f"{path.name}: set augment.cat_max_ratio (e.g. 0.75)"
    assert recipe.train.sampler == "rare", f"{path.name}: set train.sampler: rare"
    if not FAMILIES[recipe.model.family].has_own_loss:  # segformer, vit: segkit's pixel loss is used
        assert recipe.loss.class_weights is not None, f"{path.name}: set loss.class_weights (e.g. sqrt_inverse)"


# -- 2. every recipe trains through `segkit train` at tiny size on local data -----------------------

def noise_image() -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8))


def stripes(ids: list[int]) -> Image.Image:
    """A single-channel label map of vertical stripes, one per id in a shuffled order: every image
    holds every id, and no id covers more than 1/len(ids) of it (cat_max_ratio is satisfiable)."""
    order = rng.permutation(ids)
    bounds = np.linspace(0, IMAGE_W, len(order) + 1).astype(int)
    mask = np.zeros((IMAGE_H, IMAGE_W), dtype=np.uint8)
    for i, v in enumerate(order):
        mask[:, bounds[i]:bounds[i + 1]] = v
    return Image.fromarray(mask, mode="L")


def write_parquet(file: Path, n: int, image_col: str, label_col: str, ids: list[int]) -> None:
    """Rows with the Hub's Image features (PNG bytes inside the parquet file)."""
    features = datasets.Features({image_col: datasets.Image(), label_col: datasets.Image()})
    rows = {image_col: [noise_image() for _ in range(n)], label_col: [stripes(ids) for _ in range(n)]}
    file.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(file))


def build_ade20k(root: Path) -> Path:
    """zhoubolei/scene_parse_150 as its parquet branch stores it: scene_parsing/{split}/0000.parquet,
    columns `image` and `annotation` (single-channel, 0 = other, 1..150 = objectInfo150 ids)."""
    ids = [*ADE20K_IDS.values(), *ADE20K_OTHER_IDS]
    write_parquet(root / "scene_parsing" / "train" / "0000.parquet", 4, "image", "annotation", ids)
    write_parquet(root / "scene_parsing" / "validation" / "0000.parquet", 2, "image", "annotation", ids)
    return root


def build_sidewalk(root: Path) -> Path:
    """segments/sidewalk-semantic: one train split, columns `pixel_values` and `label` (ids 0..34)."""
    ids = [*SIDEWALK_IDS.values(), *SIDEWALK_OTHER_IDS]
    write_parquet(root / "data" / "train-00000-of-00001.parquet", 5, "pixel_values", "label", ids)
    return root  # val_fraction 0.1 of 5 rows holds out 1 as val


def build_camvid(root: Path) -> Path:
    """CamVid's SegNet layout: {split}/ RGB PNGs and {split}annot/ single-channel PNG ids 0..11."""
    ids = [*CAMVID_IDS.values(), *CAMVID_OTHER_IDS]
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for k in range(n):
            noise_image().save(root / split / f"0001TP_{k:06d}.png")
            stripes(ids).save(root / f"{split}annot" / f"0001TP_{k:06d}.png")
    return root


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> dict[str, Path]:
    """One small dataset per source format, built once for the module."""
    return {"ade20k": build_ade20k(tmp_path_factory.mktemp("ade20k")),
            "sidewalk": build_sidewalk(tmp_path_factory.mktemp("sidewalk")),
            "folder": build_camvid(tmp_path_factory.mktemp("camvid"))}


def test_local_ids_match_segkits_tables():
    """The ids written into the local data mean the same classes in segkit's tables."""
    from segkit.data.sources.hub_datasets import ADE20K_NAMES, SIDEWALK_NAMES

    for name, i in ADE20K_IDS.items():
        assert ADE20K_NAMES[i - 1].split(";")[0] == name
    for name, i in SIDEWALK_IDS.items():
        assert SIDEWALK_NAMES[i].split("-", 1)[1] == name.replace(" ", "")
    camvid = load_recipe(next(p for p in RECIPES if p.name.startswith("camvid"))).data.class_names
    assert {name: camvid.index(name) for name in CAMVID_IDS} == CAMVID_IDS


def data_overrides(recipe: Recipe, local_data: dict[str, Path]) -> list[str]:
    fmt = recipe.data.format
    if fmt == "synthetic":
        return ["data.synthetic_samples=8", f"data.synthetic_size={CROP}"]
    if fmt not in local_data:
        pytest.fail(f"recipe format '{fmt}' has no local data here: add a builder to tests/test_recipes.py")
    return [f"data.path={local_data[fmt]}"]


def tiny_overrides(recipe: Recipe) -> list[str]:
    sets = ["model.checkpoint=null", "model.size=tiny", "train.max_steps=2", f"augment.crop_size={CROP}",
            "train.batch_size=2", "train.num_workers=0", "train.tracker=none", "train.num_overlays=1"]
    if recipe.augment.eval_mode == "resize":
        sets.append(f"augment.eval_size={CROP}")  # `none` and `pad` keep the small generated images as they are
    return sets


def as_args(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_trains_two_steps_at_tiny_size(path: Path, local_data, tmp_path, capsys):
    recipe = load_recipe(path)
    expected = selected_names(recipe)
    out = tmp_path / "run"
    sets = tiny_overrides(recipe) + data_overrides(recipe, local_data)

    code = cli(["train", str(path), *as_args(sets), "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]

    used = yaml.safe_load((out / "recipe.yaml").read_text())
    assert used["model"]["size"] == "tiny" and used["model"]["checkpoint"] is None
    assert used["model"]["family"] == recipe.model.family
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(expected)}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert list(metrics["per_class"]) == expected
    for name in expected:  # every class is in the local eval data, so none may read "absent"
        assert metrics["per_class"][name]["gt_pixels"] > 0, name
    table = (out / "per_class.md").read_text()
    for name in expected:
        assert re.search(rf"^\|\s*{re.escape(name)}\s*\|", table, re.M), f"{name} missing from per_class.md"
    stats = json.loads((out / "class_stats.json").read_text())
    assert stats["names"] == expected
    assert all(n > 0 for n in stats["pixel_counts"]), dict(zip(stats["names"], stats["pixel_counts"]))
    assert len(list((out / "overlays").glob("*.png"))) == 1


# -- 3. a recipe on the real CamVid copy --------------------------------------------------------------

def test_camvid_maskformer_recipe_on_real_camvid(shared_data: Path, tmp_path, capsys):
    path = next((p for p in RECIPES if p.name == "camvid-4class-maskformer-swin-tiny.yaml"), None)
    assert path is not None, "recipes/camvid-4class-maskformer-swin-tiny.yaml is gone"
    out = tmp_path / "run"
    sets = ["model.checkpoint=null", "model.size=tiny", f"data.path={shared_data / 'camvid'}",
            "classes.max_samples=16", "classes.max_eval_samples=8", "train.max_steps=4",
            f"augment.crop_size={CROP}", "train.batch_size=2", "train.num_workers=0", "train.tracker=none",
            "train.num_overlays=2"]

    code = cli(["train", str(path), *as_args(sets), "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]

    for name in ("recipe.yaml", "metrics.json", "per_class.md", "confusion.png", "train_log.jsonl",
                 "model/config.json", "model/model.safetensors", "model/preprocessor_config.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert list((out / "checkpoints").glob("step-*/trainer_state.json"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["split"] == "test"
    table = (out / "per_class.md").read_text()
    for name in ("car", "pedestrian", "bicyclist", "sign_symbol"):
        assert re.search(rf"^\|\s*{name}\s*\|", table, re.M), f"{name} missing from per_class.md"
    stats = json.loads((out / "class_stats.json").read_text())
    assert stats["num_images"] == 16


# -- 4. a new recipe gets the rare-class handling without copying it ------------------------------

def test_auto_defaults_turn_rare_class_handling_on_for_background_recipes():
    from segkit.config.recipe import recipe_from_dict

    plain = {"classes": {"select": ["car"], "others": "background"}}
    r = recipe_from_dict(plain)
    assert (r.augment.cat_max_ratio, r.loss.class_weights, r.train.sampler) == (0.75, "sqrt_inverse", "rare")
    assert "classes.others is background" in r.auto_note and "train.sampler=rare" in r.auto_note
    ignored = recipe_from_dict({"classes": {"select": ["car"], "others": "ignore"}})
    assert (ignored.augment.cat_max_ratio, ignored.loss.class_weights, ignored.train.sampler) == (1.0, None, "uniform")
    assert ignored.auto_note is None
    mine = recipe_from_dict({**plain, "loss": {"class_weights": None}, "train": {"sampler": "uniform"}})
    assert (mine.augment.cat_max_ratio, mine.loss.class_weights, mine.train.sampler) == (0.75, None, "uniform")
    assert "loss.class_weights" not in mine.auto_note  # what the recipe set is left alone


def test_the_banner_says_what_auto_turned_on(tmp_path, capsys):
    from tests.test_train import write_recipe

    recipe = write_recipe(tmp_path, train={"max_steps": 1, "tracker": "none", "num_overlays": 0})
    assert cli(["train", str(recipe), "--output-dir", str(tmp_path / "run")]) == 0
    banner = capsys.readouterr().out
    assert "defaults rare-class handling on, since classes.others is background" in banner
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["train"]["sampler"] == "rare" and saved["augment"]["cat_max_ratio"] == 0.75  # values, not auto


def test_hand_built_sections_say_auto_needs_the_recipe_and_build_data_resolves_it():
    from segkit.config.recipe import Recipe
    from segkit.config.sections import AugmentConfig, DataConfig, LossConfig
    from segkit.data.augment import build_transforms
    from segkit.data.dataset import build_data
    from segkit.train.losses import build_loss

    with pytest.raises(ValueError, match="augment.cat_max_ratio: 'auto'"):
        build_transforms(AugmentConfig(crop_size=16), [0.5] * 3, [0.5] * 3, train=True)
    with pytest.raises(ValueError, match="loss.class_weights: 'auto'"):
        build_loss(LossConfig(), 3)
    recipe = Recipe()  # built in Python, never through load_recipe
    recipe.data = DataConfig(format="synthetic", synthetic_samples=4, synthetic_size=32)
    recipe.augment.crop_size = 16
    data = build_data(recipe, [0.5] * 3, [0.5] * 3)
    assert data.train is not None
    assert (recipe.augment.cat_max_ratio, recipe.train.sampler) in ((0.75, "rare"), (1.0, "uniform"))
