"""Export a run as a Hub-ready folder with a model card, and push it.

The export holds the model in the Hugging Face layout (config with id2label, safetensors, the
image processor set to feed images as evaluated), a README.md model card (card.py), the run's
report and a few overlays. `push` uploads exactly that folder.

Export writes into a temporary folder and swaps it into place; it replaces only a folder that an
earlier export wrote (it leaves a marker file), never anything else. Pictures of gated or
non-commercial data stay out of a push that may be public unless asked for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

from huggingface_hub import HfApi, ModelCard

from segkit.config.recipe import Recipe, load_recipe
from segkit.data.sources.hub_datasets import GATED_DATASETS, PRESET_REPOS
from segkit.hub.card import model_card
from segkit.hub.explain import NETWORK_ERRORS, explain
from segkit.labels import LabelSet
from segkit.run_folder import Report, RunFolder, replace_dir, temp_dir_for, write_text

EXPORT_MARKER = ".segkit-export"
"""Written into every export folder: only a folder holding it may be replaced by a new export."""
OVERLAYS_SHIPPED = 4
OVERLAYS_DIR = Report(Path(".")).overlays.name
"""Where an export keeps its pictures (and a repo, after a push)."""
GATED_PRESETS = tuple(f for f, repo in PRESET_REPOS.items() if repo in GATED_DATASETS)
"""Preset formats whose data is gated, wherever it is read from."""


class ExportError(ValueError):
    """A run that cannot be exported or pushed as asked; the message says what to do."""


def _load_run(run: RunFolder) -> tuple[Recipe, dict]:
    if not (run.model / "config.json").is_file():
        raise ExportError(f"{run.root}: no model/ folder. Export a finished run folder (segkit train writes model/).")
    if not run.recipe.is_file():
        raise ExportError(f"{run.root}: no recipe.yaml. Export a run folder written by `segkit train`.")
    metrics = json.loads(run.metrics.read_text()) if run.metrics.is_file() else {}
    return load_recipe(run.recipe), metrics


def restricted_data(recipe: Recipe) -> str | None:
    """Why pictures of this recipe's data should not be published, or None."""
    repo = recipe.data.path or PRESET_REPOS.get(recipe.data.format)
    if repo in GATED_DATASETS:
        return f"{repo} is gated"
    if recipe.data.format in GATED_PRESETS:  # a local copy is still the gated dataset's pictures
        return f"{PRESET_REPOS[recipe.data.format]} is gated (here a copy of it, {repo})"
    licence = (recipe.data.license or "").lower()
    if "-nc" in licence or "noncommercial" in licence or "non-commercial" in licence or "research" in licence:
        return f"its data licence is {recipe.data.license}"
    return None


def base_license(recipe: Recipe) -> str | None:
    """The recipe's `model.license`, else the base checkpoint's card licence when it can be read."""
    if recipe.model.license:
        return recipe.model.license
    base = recipe.model.checkpoint
    if not base:
        return None
    local = Path(base).expanduser() / "README.md"
    try:
        card = ModelCard.load(local) if local.is_file() else ModelCard.load(base)
    except (*NETWORK_ERRORS, ValueError):
        return None
    return card.data.license


def _check_target(out: Path, run: RunFolder) -> None:
    """Refuse a folder that an export did not write: export replaces its target."""
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in run.root.resolve().parents or resolved == run.root.resolve():
        raise ExportError(f"--output {out}: that folder holds the run or the working directory. Name a new folder.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_MARKER).is_file())):
        raise ExportError(f"--output {out} exists and was not written by `segkit export`; refusing to replace it. "
                          "Name a new or empty folder.")


def export(run_dir: str | Path, output: str | Path | None = None, repo_id: str | None = None,
           overlays: bool = True, formats: Sequence[str] = (), quantize: Sequence[str] = ()) -> Path:
    """Copy the model, write the card, add the run's report and (unless `overlays` is False) a few
    overlays; the folder appears complete or not at all. `formats` ("onnx") adds model.onnx,
    checked against PyTorch (segkit.hub.onnx), and `quantize` ("int8", "fp16") its variants."""
    if quantize and "onnx" not in formats:
        raise ExportError("--quantize applies to the ONNX graph: add --format onnx.")
    run = RunFolder(run_dir)
    recipe, metrics = _load_run(run)
    out = Path(output) if output else run.export
    _check_target(out, run)
    config = json.loads((run.model / "config.json").read_text())
    tmp = temp_dir_for(out)
    for f in run.model.iterdir():
        shutil.copy2(f, tmp / f.name)
    for path in (run.metrics, run.per_class, run.confusion):
        if path.is_file():
            shutil.copy2(path, tmp / path.name)
    shipped = sorted(run.overlays.glob("*.png"))[:OVERLAYS_SHIPPED] if overlays else []
    if shipped:
        Report(tmp).overlays.mkdir()
        for p in shipped:
            shutil.copy2(p, Report(tmp).overlays / p.name)
    pictures = [f"{Report(tmp).overlays.name}/{p.name}" for p in shipped]
    deploy = _export_onnx(run, tmp, quantize) if "onnx" in formats else None
    card = model_card(recipe, metrics, LabelSet.from_config(config), config, repo_id, base_license(recipe), pictures,
                      deploy)
    write_text(tmp / "README.md", card)
    (tmp / EXPORT_MARKER).write_text("Written by segkit export; a new export replaces this folder.\n")
    replace_dir(tmp, out)
    return out


def _export_onnx(run: RunFolder, tmp: Path, quantize: Sequence[str]) -> list[str]:
    """model.onnx (and its variants) into the export being built, checked against the run's model;
    a refused graph removes the half-built export and says why."""
    from segkit.hub.onnx import card_section, export_onnx, summary  # torch.onnx is slow to import
    from segkit.models.build import load_model

    try:
        report = export_onnx(load_model(run.model), tmp, variants=quantize)
    except BaseException:  # a refused graph or Ctrl-C: no half-built export is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(summary(report))
    return card_section(report)


def push(run_dir: str | Path, repo_id: str, private: bool | None = None, overlays: bool | None = None,
         token: str | None = None, formats: Sequence[str] = (), quantize: Sequence[str] = ()) -> str:
    """Export, then upload to `repo_id` (needs `hf auth login` or HF_TOKEN). `private=None` leaves
    the visibility to the Hub (an organisation may make new repos private). `overlays=None` ships
    them unless the data is gated or non-commercial and the repo may be public."""
    run = RunFolder(run_dir)
    recipe, _ = _load_run(run)
    reason = restricted_data(recipe)
    chosen = overlays

    def ships(is_private: bool) -> bool:
        return chosen if chosen is not None else is_private or reason is None

    # exported before any network call, so that a failed push leaves it ready for the next try
    out = export(run.root, run.export, repo_id=repo_id, overlays=ships(private is True), formats=formats,
                 quantize=quantize)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        # create_repo leaves an existing repo's visibility as it is: ask the Hub what it is now
        is_private = bool(api.repo_info(repo_id).private)
        if private is True and not is_private:
            print(f"{repo_id} already exists and is public: --private does not change that (change it in the "
                  "repo's settings on the Hub). Pushing as to a public repo.")
        if ships(is_private) != ships(private is True):
            out = export(run.root, run.export, repo_id=repo_id, overlays=ships(is_private), formats=formats,
                         quantize=quantize)
        if chosen is None and not ships(is_private):
            print(f"Overlay pictures left out of the push: {reason}. Pass --with-overlays to include them.")
        # pictures an earlier push left are deleted, unless this commit uploads them again
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(out), commit_message="Upload segkit model",
                                   ignore_patterns=[EXPORT_MARKER], delete_patterns=[f"{OVERLAYS_DIR}/*"])
    except NETWORK_ERRORS as e:
        why = explain(e, repo_id, "model") or f"{type(e).__name__}: {e}"
        raise ExportError(f"Could not push to {repo_id}: {why}\nCheck the network, that you are logged in "
                          f"(`hf auth login` or HF_TOKEN) and may write to {repo_id}. The export is ready in {out}; "
                          "run `segkit push` again to retry.") from None
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
