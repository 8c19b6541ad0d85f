"""The package's shape: imports run one way, and each shared name is defined in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segkit"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> segkit modules it imports at module level (importing a.b.c imports a.b too)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segkit"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("segkit")]
            for target in targets:
                parts = target.split(".")
                graph[name] |= {q for i in range(2, len(parts) + 1) if (q := ".".join(parts[:i])) in mods and q != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among modules, if any. A package importing its own submodules (re-exports in
    __init__) is not one: Python runs the package first, and the submodule finds it loading."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "pkg": {"pkg.x"}, "pkg.x": {"pkg"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"pkg": {"pkg.x"}, "pkg.x": {"pkg"}}) is None


def literal_sites(pattern: str) -> list[str]:
    """Files (relative to the package) holding a string literal that matches `pattern`."""
    rx = re.compile(pattern)
    sites = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and rx.fullmatch(node.value):
                sites.append(str(path.relative_to(PACKAGE)))
                break
    return sorted(sites)


def test_run_folder_names_are_written_once():
    names = (r"(recipe\.yaml|class_stats\.json|train_log\.jsonl|metrics\.json|per_class\.md|confusion\.png|start\.json"
             r"|per_image\.csv|report\.html)")
    assert literal_sites(names) == ["run_folder.py"]
    assert literal_sites(r"step-\{step:07d\}|checkpoints") == ["run_folder.py"]


def collection_sites(members: set[str]) -> list[str]:
    """Files holding a tuple, list or set literal with at least two of `members`: a definition of
    that vocabulary, as opposed to a use of one of its words."""
    sites = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(words & members) >= 2:
                    sites.append(str(path.relative_to(PACKAGE)))
                    break
    return sorted(sites)


def test_shared_vocabularies_are_defined_once():
    assert collection_sites({".png", ".jpg", ".jpeg", ".tif"}) == ["data/decode.py"]
    assert collection_sites({"segformer", "maskformer", "mask2former", "vit"}) == ["config.py"]
    assert collection_sites({"inverse", "sqrt_inverse", "enet"}) == ["config.py"]


def test_collection_sites_finds_a_definition_not_a_use(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text('KINDS = ("inverse", "enet")\n')
    (tmp_path / "b.py").write_text('if kind == "inverse":\n    pass\n')
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path)
    assert collection_sites({"inverse", "enet"}) == ["a.py"]


def test_family_names_live_in_the_config_and_the_classes():
    from segkit.config.recipe import MODEL_FAMILIES
    from segkit.models import FAMILIES

    assert tuple(FAMILIES) == MODEL_FAMILIES
    assert all(cls.family == name for name, cls in FAMILIES.items())
