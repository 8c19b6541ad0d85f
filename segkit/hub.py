"""Export a run as a Hub-ready folder with a model card, and push it.

The export holds the model in the Hugging Face layout (config with id2label, safetensors, the
image processor), a README.md model card filled from the run (classes, per-class IoU, training
recipe, data), and the run's pictures. `push` uploads exactly that folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi
from huggingface_hub.utils import HfHubHTTPError

from segkit.config import Recipe, load_recipe
from segkit.data.sources import PRESET_REPOS
from segkit.labels import LabelSet
from segkit.run_folder import Report, RunFolder, write_text


class ExportError(ValueError):
    """A run that cannot be exported as asked; the message names what is missing."""


def _load_run(run: RunFolder) -> tuple[Recipe, dict]:
    if not (run.model / "config.json").is_file():
        raise ExportError(f"{run.root}: no model/ folder. Export a finished run folder (segkit train writes model/).")
    if not run.recipe.is_file():
        raise ExportError(f"{run.root}: no recipe.yaml. Export a run folder written by `segkit train`.")
    metrics = json.loads(run.metrics.read_text()) if run.metrics.is_file() else {}
    return load_recipe(run.recipe), metrics


def _fmt(v: Any) -> str:
    return "absent" if v is None else f"{v:.4f}"


def model_card(recipe: Recipe, metrics: dict, labels: LabelSet, repo_id: str | None = None) -> str:
    """A model card in the Hub's format: YAML front matter, then what the model does and how well."""
    model, data = recipe.model, recipe.data
    base = model.checkpoint
    dataset = data.path or PRESET_REPOS.get(data.format)
    front = {"library_name": "transformers", "pipeline_tag": "image-segmentation",
             "tags": ["segkit", "semantic-segmentation", model.family]}
    if base:
        front["base_model"] = base
    if dataset and "/" in str(dataset) and not Path(str(dataset)).exists():
        front["datasets"] = [dataset]
    split = metrics.get("split", "val")
    rows = ["| class | IoU | accuracy |", "|---|---|---|"]
    for name in labels.names:
        c = metrics.get("per_class", {}).get(name, {})
        rows.append(f"| {name} | {_fmt(c.get('iou'))} | {_fmt(c.get('acc'))} |")
    strict, fg = metrics.get("strict", {}), metrics.get("foreground", {})
    usage_id = repo_id or "PATH/TO/model"
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {recipe.name}", "",
        f"Semantic segmentation of {', '.join(labels.names)}, fine-tuned with segkit "
        f"({model.family} family{', from ' + base if base else ', trained from scratch'}).", "",
        f"## Results on {split}", "",
        f"mIoU {_fmt(strict.get('mIoU'))} over all classes; {_fmt(fg.get('mIoU'))} over the foreground classes "
        "(background ignored), which is how subsets are usually reported.", "",
        *rows, "", "![confusion matrix](confusion.png)", "",
        "## Use", "", "```python",
        "from segkit.models import load_model",
        f"model = load_model(\"{usage_id}\")  # or: segkit predict {usage_id} IMAGES/", "```", "",
        "## Training recipe", "", "```yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "```", "",
    ])


def export(run_dir: str | Path, output: str | Path | None = None, repo_id: str | None = None) -> Path:
    """Copy the model, write the card, add the run's report and a few overlays."""
    run = RunFolder(run_dir)
    recipe, metrics = _load_run(run)
    out = Path(output) if output else run.export
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run.model, out)
    labels = LabelSet.from_config(json.loads((out / "config.json").read_text()))
    write_text(out / "README.md", model_card(recipe, metrics, labels, repo_id))
    for path in (run.metrics, run.per_class, run.confusion):
        if path.is_file():
            shutil.copy2(path, out / path.name)
    overlays = sorted(run.overlays.glob("*.png"))[:4]
    if overlays:
        Report(out).overlays.mkdir()
        for p in overlays:
            shutil.copy2(p, Report(out).overlays / p.name)
    return out


def push(run_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Export, then upload the folder to `repo_id` (needs `huggingface-cli login` or HF_TOKEN)."""
    out = export(run_dir, repo_id=repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(out), commit_message="Upload segkit model")
    except (HfHubHTTPError, OSError) as e:
        raise ExportError(
            f"Could not push to {repo_id}: {e}. Log in with `hf auth login` (or set HF_TOKEN), check the "
            f"network, and that you may write to {repo_id}. The export is ready in {out}."
        ) from None
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
