"""`segkit push` against the Hub at the HTTP layer (tests/hub_replica.py): visibility is read back
from the Hub after create_repo, since an existing repo keeps its own; pictures that may not ship are
removed from a repo that an earlier push left them in; a local copy of gated data is still gated."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.cli import main as cli
from tests.test_train import write_recipe


@pytest.fixture(scope="module")
def nc_run(tmp_path_factory) -> Path:
    """A finished tiny run on non-commercial data, with overlays."""
    tmp = tmp_path_factory.mktemp("nc")
    recipe = write_recipe(tmp, data={"license": "cc-by-nc-4.0"}, train={"max_steps": 1, "tracker": "none"})
    assert cli(["train", str(recipe), "--output-dir", str(tmp / "run")]) == 0
    assert list((tmp / "run" / "overlays").glob("*.png"))
    return tmp / "run"


def files(hub, repo: str) -> set[str]:
    return set(hub.repos[f"models/{repo}"]["main"][1])


def test_private_push_to_an_existing_public_repo_ships_no_pictures(nc_run, fake_hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_fakeTOKENforTHEreplica0123456789")
    fake_hub.add("models", "me/model", "main", {"README.md": b"old\n"})  # exists, public
    assert cli(["push", str(nc_run), "me/model", "--private"]) == 0
    out = capsys.readouterr().out
    assert "already exists and is public" in out and "--with-overlays" in out
    shipped = files(fake_hub, "me/model")
    assert "model.safetensors" in shipped and not [f for f in shipped if f.startswith("overlays/")]
    assert "models/me/model" not in fake_hub.private  # --private did not change its visibility


def test_a_new_private_repo_gets_pictures_and_a_public_push_then_removes_them(nc_run, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fakeTOKENforTHEreplica0123456789")
    assert cli(["push", str(nc_run), "me/private", "--private"]) == 0
    assert "models/me/private" in fake_hub.private
    assert [f for f in files(fake_hub, "me/private") if f.startswith("overlays/")]
    fake_hub.private.discard("models/me/private")  # the owner made it public on the Hub
    assert cli(["push", str(nc_run), "me/private"]) == 0
    left = files(fake_hub, "me/private")
    assert "README.md" in left and not [f for f in left if f.startswith("overlays/")]
    assert "overlays/" not in (left and fake_hub.repos["models/me/private"]["main"][1]["README.md"].decode())


def test_a_local_copy_of_sidewalk_is_gated(tmp_path):
    from segkit.config.recipe import recipe_from_dict
    from segkit.hub.export import restricted_data

    copy = recipe_from_dict({"data": {"format": "sidewalk", "path": str(tmp_path / "sidewalk-copy")},
                             "classes": {"select": ["car"]}})
    assert "segments/sidewalk-semantic is gated" in (restricted_data(copy) or "")
    other = recipe_from_dict({"data": {"format": "hub", "path": str(tmp_path / "mine")}, "classes": {"select": ["car"]}})
    assert restricted_data(other) is None
