"""sidewalk's void-* classes are not annotated (Cityscapes ignores its void group): they become 255
unless chosen, and `segkit inspect` lists them among the ignored."""

from __future__ import annotations

from segkit.cli import main as cli
from segkit.config.sections import ClassesConfig, DataConfig
from segkit.data import load_source, select_classes
from segkit.data.source import unlabeled_ids
from tests.test_recipes import build_sidewalk

VOID = ["void-ground", "void-dynamic", "void-static", "void-unclear"]


def test_void_groups_and_unlabeled_names_are_ignored():
    names = {0: "unlabeled", 1: "flat-road", 31: "void-ground", 32: "void-dynamic", 33: "Void_Static", 34: "voidance"}
    assert unlabeled_ids(names) == [0, 31, 32, 33]


def test_a_sidewalk_copy_ignores_void_and_inspect_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    root = build_sidewalk(tmp_path / "sidewalk")
    source = load_source(DataConfig(format="sidewalk", path=str(root)))
    assert [source.class_names[i] for i in source.ignore_ids] == ["unlabeled", *VOID]
    selection = select_classes(source, ClassesConfig(select=["car"]))
    assert set(VOID) <= set(selection.labels.ignored_sources)
    assert not set(VOID) & set(selection.labels.sources[0])  # not part of background
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {{format: sidewalk, path: {root}}}\nclasses: {{select: [car], others: background}}\n")
    cli(["inspect", str(recipe), "--output", str(tmp_path / "inspect")])
    out = capsys.readouterr().out
    ignored = next(line for line in out.splitlines() if "255 ignored" in line)
    assert "unlabeled" in ignored and "void-ground" in ignored, ignored
