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
    """Module -> segkit modules it imports, at module level or inside a function (importing a.b.c
    imports a.b too): an import moved into a function to dodge a cycle is still a cycle."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in runtime_nodes(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segkit"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("segkit")]
            for target in targets:
                parts = target.split(".")
                graph[name] |= {q for i in range(2, len(parts) + 1) if (q := ".".join(parts[:i])) in mods and q != name}
    return graph


def runtime_nodes(tree: ast.AST):
    """Every node that runs: all of them but the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


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


def collection_sites(members: set[str], dicts: bool = True) -> list[str]:
    """Files holding a tuple, list, set (or, with `dicts`, dict) literal with at least two of
    `members` (as elements or keys): a definition of that vocabulary, as opposed to a use of one of
    its words. Split names are legitimately dict keys where a dataset's own names are mapped."""
    sites = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) or (dicts and isinstance(node, ast.Dict)):
                elements = node.keys if isinstance(node, ast.Dict) else node.elts
                words = {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(words & members) >= 2:
                    sites.append(str(path.relative_to(PACKAGE)))
                    break
    return sorted(sites)


def test_shared_vocabularies_are_defined_once():
    assert collection_sites({".png", ".jpg", ".jpeg", ".tif"}) == ["data/decode.py"]
    assert collection_sites({"inverse", "sqrt_inverse", "enet"}) == ["config/sections.py"]
    assert collection_sites({"train", "val", "test"}, dicts=False) == ["data/source.py"]
    # the family names are typed once each, in the registry's table, never as a list
    assert collection_sites({"segformer", "maskformer", "mask2former", "vit"}) == []


def test_collection_sites_finds_a_definition_not_a_use(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text('KINDS = ("inverse", "enet")\n')
    (tmp_path / "b.py").write_text('if kind == "inverse":\n    pass\n')
    (tmp_path / "c.py").write_text('WEIGHTS = {"inverse": 1, "enet": 2}\n')
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path)
    assert collection_sites({"inverse", "enet"}) == ["a.py", "c.py"]


def test_one_registry_of_families():
    """The registry names every family once; the builders, the saved models' records, the recipe's
    check and the README's table all agree with it."""
    from segkit.config import RecipeError
    from segkit.config.recipe import recipe_from_dict
    from segkit.models.build import BUILDERS
    from segkit.models.registry import FAMILIES, family_of

    assert list(BUILDERS) == list(FAMILIES)
    assert all(b.family == name for name, b in BUILDERS.items())
    assert all(family_of({"model_type": t}) == name for name, f in FAMILIES.items() for t in f.model_types
               if t != "upernet")
    try:
        recipe_from_dict({"model": {"family": "segformr"}})
    except RecipeError as e:
        assert "Did you mean 'segformer'" in str(e) and ", ".join(FAMILIES) in str(e)
    else:
        raise AssertionError("an unknown family passed the recipe check")
    readme = (PACKAGE.parent / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9]+)` \| `([^`]+)`", readme, flags=re.M)
    assert [(name, f.default_checkpoint) for name, f in FAMILIES.items()] == rows


def calls_of(name: str) -> list[str]:
    """Files (relative to the package) that call a function or class called `name`."""
    sites = set()
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                if (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) == name:
                    sites.add(str(path.relative_to(PACKAGE)))
    return sorted(sites)


def test_each_decision_has_one_owner():
    """Whole image or windows, reseeding, fonts, the evaluation processor, `auto`, the precision
    choice: each is made in one module, and the others call it."""
    assert calls_of("sliding_mask") == ["infer/segment.py"]
    # the ONNX parity check compares raw scores, below the argmax that segment() adds
    # (and the calibrated head fits offsets on the raw val scores of images segment() runs whole)
    assert calls_of("scores_for") == ["hub/onnx.py", "infer/segment.py", "train/calibrate.py"]
    assert calls_of("set_random_seed") == ["data/augment.py"]
    assert calls_of("load_default") == ["evaluation/overlays.py"]
    assert calls_of("SegformerImageProcessorPil") == ["data/eval_transform.py"]
    assert calls_of("resolve_auto") == ["config/recipe.py"]
    assert calls_of("is_bf16_supported") == ["precision.py"]


def test_public_names_are_defined_once():
    """No two modules define the same public function or class (two `read_image`s, one raising
    DataError and one ValueError, is how two behaviours start)."""
    where: dict[str, list[str]] = {}
    for path in modules().values():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    assert {n: w for n, w in where.items() if len(w) > 1} == {}


def test_module_names_do_not_collide():
    """One name, one module: no two modules share a file name, and none is named like a package."""
    paths = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    stems = [p.stem for p in paths]
    packages = {p.parent.name for p in PACKAGE.rglob("__init__.py")} - {"segkit"}
    assert sorted({s for s in stems if stems.count(s) > 1} | (set(stems) & packages)) == []


def test_every_package_says_what_it_holds():
    for init in PACKAGE.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(PACKAGE)} has no docstring"


def test_the_trainer_is_built_by_keyword():
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Trainer":
                assert not node.args, f"{path.relative_to(PACKAGE)}: Trainer(...) with positional arguments"


def test_the_readme_layout_names_every_package():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for init in PACKAGE.rglob("__init__.py"):
        folder = init.parent.relative_to(PACKAGE.parent)
        if folder.name != "segkit":
            assert f"{folder.name}/" in layout, f"README's Layout does not show {folder}/"
    for module in PACKAGE.glob("*.py"):
        assert module.name == "__init__.py" or f"segkit/{module.name}" in layout, f"Layout lacks {module.name}"


def test_inference_does_not_load_the_training_data_stack():
    """A model and the inference path load without datasets, albumentations or OpenCV: `segkit
    predict` and a deployed model pay for what they use (160 MB of RSS when they did not)."""
    import subprocess
    import sys

    code = ("import sys\nimport segkit.models.build, segkit.infer.segment, segkit.infer.predict.run\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'datasets', 'albumentations', 'cv2', 'pandas'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
