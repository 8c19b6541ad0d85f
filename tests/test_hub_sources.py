"""The Hub presets against replicas of the real repos, served at the HTTP layer (tests/hub_replica.py):
zhoubolei/scene_parse_150's script on main and parquet export on refs/convert/parquet, the gated
segments/sidewalk-semantic with its id2label.json, missing repos, and models by Hub id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from segkit.cli import main as cli
from segkit.config.sections import ClassesConfig, DataConfig
from segkit.data import DataError, load_source, select_classes
from segkit.data.decode import read_label
from segkit.models import ModelError, load_model
from tests.hub_replica import SIDEWALK_ID2LABEL, ade20k_branches, sidewalk_files

ADE_IDS = [0, 1, 9, 13, 15]  # other, wall, windowpane, person, door
SIDEWALK_IDS = [0, 1, 8, 10, 15, 21, 26]  # unlabeled, road, person, car, bicycle, fence, traffic sign


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "segkit-cache"))


def serve_ade20k(hub) -> None:
    for branch, files in ade20k_branches(ADE_IDS).items():
        hub.add("datasets", "zhoubolei/scene_parse_150", branch, files)


def test_ade20k_preset_reads_the_parquet_export(fake_hub):
    serve_ade20k(fake_hub)
    source = load_source(DataConfig(format="ade20k"))
    assert set(source.splits) == {"train", "val"}  # the test split has no annotations: never read
    assert (len(source.splits["train"]), len(source.splits["val"])) == (7, 3)
    assert source.splits["train"].column_names == ["image", "label"]
    ids = set(np.unique(read_label(source.splits["train"][0]["label"], "row")).tolist())
    assert ids <= set(ADE_IDS)  # scene_parsing's single-channel ids, not instance_segmentation's RGB
    assert any("refs%2Fconvert%2Fparquet" in line for line in fake_hub.log)
    assert not any("instance_segmentation/" in line and "resolve" in line for line in fake_hub.log)


def test_the_replica_fails_like_the_real_branch_for_a_config_name(fake_hub):
    """The call segkit made before: datasets builds a `default` config from a branch without README."""
    serve_ade20k(fake_hub)
    with pytest.raises(ValueError, match="BuilderConfig 'scene_parsing' not found"):
        datasets.load_dataset("zhoubolei/scene_parse_150", "scene_parsing", revision="refs/convert/parquet")


def test_a_local_copy_of_the_parquet_branch_loads_the_same_way(tmp_path):
    root = tmp_path / "scene_parse_150"
    for name, data in ade20k_branches(ADE_IDS)["refs/convert/parquet"].items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    source = load_source(DataConfig(format="ade20k", path=str(root)))
    assert (len(source.splits["train"]), len(source.splits["val"])) == (7, 3)


def test_ade20k_preset_takes_a_parquet_mirror_repo(fake_hub):
    """A mirror in data.path is read on its own main branch, with no config or folder forced on it."""
    files = ade20k_branches(ADE_IDS)["refs/convert/parquet"]
    mirror = {f"data/{split}-00000-of-00001.parquet": files[f"scene_parsing/{split}/0000.parquet"]
              for split in ("train", "validation")}
    fake_hub.add("datasets", "someone/ade20k-parquet", "main", mirror)
    source = load_source(DataConfig(format="ade20k", path="someone/ade20k-parquet"))
    assert (len(source.splits["train"]), len(source.splits["val"])) == (4, 3)


def test_a_loading_script_repo_gets_the_alternatives(fake_hub):
    serve_ade20k(fake_hub)
    with pytest.raises(DataError, match="loading script") as err:
        load_source(DataConfig(format="hub", path="zhoubolei/scene_parse_150", class_names=["a", "b"]))
    assert "refs/convert/parquet" in str(err.value) and "data.format: folder" in str(err.value)


def test_sidewalk_preset_reads_the_repo_id2label(fake_hub):
    fake_hub.add("datasets", "segments/sidewalk-semantic", "main", sidewalk_files(SIDEWALK_IDS))
    source = load_source(DataConfig(format="sidewalk"))
    assert source.class_names == SIDEWALK_ID2LABEL
    assert source.class_names[21] == "construction-fenceguardrail"
    assert source.ignore_ids == [0, 31, 32, 33, 34]  # unlabeled and void-*, ignored as Cityscapes ignores void
    assert len(source.splits["train"]) + len(source.splits["val"]) == 6
    selection = select_classes(source, ClassesConfig(select=["person", "car", "bicycle", "traffic sign"]))
    assert selection.source_ids == {"background": [i for i in range(1, 31) if i not in (8, 10, 15, 26)],
                                    "person": [8], "car": [10], "bicycle": [15], "traffic sign": [26]}


@pytest.mark.parametrize("fmt", ["sidewalk", "hub"])
def test_a_gated_dataset_says_where_to_accept_its_terms(fake_hub, fmt):
    fake_hub.add("datasets", "segments/sidewalk-semantic", "main", sidewalk_files(SIDEWALK_IDS))
    fake_hub.gated.add("datasets/segments/sidewalk-semantic")
    with pytest.raises(DataError) as err:
        load_source(DataConfig(format=fmt, path="segments/sidewalk-semantic"))
    message = str(err.value)
    assert "gated" in message and "https://huggingface.co/datasets/segments/sidewalk-semantic" in message
    assert "hf auth login" in message and "Offline" not in message


def test_a_gated_dataset_with_names_given_fails_at_the_data(fake_hub):
    """No id2label.json download needed: the gate then answers datasets' own first request."""
    fake_hub.add("datasets", "segments/sidewalk-semantic", "main", sidewalk_files(SIDEWALK_IDS))
    fake_hub.gated.add("datasets/segments/sidewalk-semantic")
    with pytest.raises(DataError, match="is gated: open https://huggingface.co/datasets/segments/sidewalk-semantic"):
        load_source(DataConfig(format="sidewalk", class_names=list(SIDEWALK_ID2LABEL.values())))


def test_a_missing_dataset_is_named(fake_hub):
    with pytest.raises(DataError, match="no-one/nothing: no such dataset on the Hub, or it is private"):
        load_source(DataConfig(format="hub", path="no-one/nothing", class_names=["a"]))


# -- models by Hub id -------------------------------------------------------------------------------


def cache_snapshot(cache: Path, repo_id: str, model_dir: Path, branch: str = "main") -> str:
    """A model folder laid out in the Hugging Face cache as a download leaves it."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / branch).write_text(sha)  # no newline: hf_hub_download reads the ref unstripped
    return sha


def test_models_load_by_hub_id_from_the_cache(finished_run, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    sha = cache_snapshot(cache, "someone/tiny-seg", finished_run / "model")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    model = load_model("someone/tiny-seg")
    assert model.labels.names == ("background", "circle", "square")
    assert load_model("someone/tiny-seg", revision=sha).labels == model.labels
    with pytest.raises(ModelError, match="not in the local cache"):
        load_model("someone/tiny-seg", revision="v2")

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(images / "a.png")
    assert cli(["predict", "someone/tiny-seg", str(images), "--output", str(tmp_path / "pred")]) == 0
    with Image.open(tmp_path / "pred" / "masks" / "a.png") as mask:
        assert mask.size == (50, 40)


def test_models_load_by_hub_id_over_http(finished_run, fake_hub):
    files = {p.name: p.read_bytes() for p in (finished_run / "model").iterdir()}
    fake_hub.add("models", "someone/tiny-seg", "main", files)
    assert load_model("someone/tiny-seg").labels.names == ("background", "circle", "square")
    fake_hub.gated.add("models/someone/tiny-seg")
    shutil.rmtree(Path(__import__("huggingface_hub").constants.HF_HUB_CACHE))
    with pytest.raises(ModelError, match="is gated: open https://huggingface.co/someone/tiny-seg"):
        load_model("someone/tiny-seg")


def test_evaluate_takes_a_hub_id(finished_run, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache_snapshot(cache, "someone/tiny-seg", finished_run / "model")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    out = tmp_path / "eval"
    assert cli(["evaluate", "someone/tiny-seg", "--data", str(finished_run / "recipe.yaml"), "--split", "test",
                "--output", str(out)]) == 0
    reported = json.loads((finished_run / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["strict"] == reported["strict"]


def test_a_gated_base_checkpoint_says_where_to_accept_its_terms(fake_hub):
    from segkit.config.sections import ModelConfig
    from segkit.labels import LabelSet
    from segkit.models import build_model

    fake_hub.add("models", "facebook/maskformer-swin-base-ade", "main", {"config.json": b"{}"})
    fake_hub.gated.add("models/facebook/maskformer-swin-base-ade")
    with pytest.raises(ModelError, match="is gated: open https://huggingface.co/facebook/maskformer-swin-base-ade"):
        build_model(ModelConfig(family="maskformer", checkpoint="facebook/maskformer-swin-base-ade"),
                    LabelSet(("background", "person")))
