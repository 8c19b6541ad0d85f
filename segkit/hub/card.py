"""The model card: YAML metadata the Hub reads (licence, base model, datasets, `model-index` with
the metrics), then what the model segments, how well, from which classes, and how to use it.

Its `model-index` parses with huggingface_hub's `ModelCard`, and its figures are metrics.json's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segkit.config.recipe import Recipe
from segkit.data.sources.hub_datasets import ADE20K_DATA_DIR, ADE20K_REVISION, PRESET_REPOS
from segkit.labels import LabelSet
from segkit.models.locate import looks_local
from segkit.models.registry import FAMILIES


def dataset_id(recipe: Recipe) -> str | None:
    """The Hub dataset a recipe trained on, when it names one (a preset, or a repo id)."""
    path = recipe.data.path or PRESET_REPOS.get(recipe.data.format)
    if path and recipe.data.format in ("ade20k", "sidewalk", "hub") and not Path(path).expanduser().exists():
        return path
    return None


def hub_model_id(checkpoint: str | None) -> bool:
    """True for a Hub model id (owner/name), False for a local folder or nothing."""
    return bool(checkpoint) and not looks_local(checkpoint)


def dataset_split(recipe: Recipe, split: str) -> dict[str, Any]:
    """model-index `dataset` fields for segkit's `split`, in the dataset's own words: its split name
    (ADE20K's val is `validation`, on the parquet branch's `scene_parsing` folder), and, when val
    was held out of train (sidewalk has only `train`), the split it came from and how."""
    data = recipe.data
    if split == "val" and data.val_fraction > 0 and held_out(recipe):
        return {"split": "train", "args": {"held_out": f"val: {data.val_fraction:.0%} of train, seed {data.seed}"}}
    if data.splits:
        return {"split": data.splits.get(split, split)}
    if data.format == "ade20k" and not data.path:
        fields: dict[str, Any] = {"split": {"val": "validation"}.get(split, split)}
        fields["config"] = data.data_dir or ADE20K_DATA_DIR
        fields["revision"] = data.revision or ADE20K_REVISION
        return fields
    return {"split": split}


def held_out(recipe: Recipe) -> bool:
    """Whether the run's val came out of train: the source has no val split of its own."""
    data = recipe.data
    if data.splits:
        return "val" not in data.splits
    return data.format == "sidewalk"  # segments/sidewalk-semantic has one split, train


def metric_entries(metrics: dict[str, Any], labels: LabelSet) -> list[dict[str, Any]]:
    """model-index metrics: strict and foreground mIoU, pixel accuracy, and each class's IoU."""
    entries = [{"type": "mean_iou", "value": metrics["strict"]["mIoU"], "name": f"mIoU (all {labels.num_classes} classes)"}]
    if labels.background is not None:
        entries.append({"type": "mean_iou", "value": metrics["foreground"]["mIoU"], "name": "mIoU (foreground)"})
    entries.append({"type": "accuracy", "value": metrics["strict"]["aAcc"], "name": "pixel accuracy"})
    for name in labels.names:
        iou = metrics["per_class"][name]["iou"]
        if iou is not None:
            entries.append({"type": "iou", "value": iou, "name": f"IoU {name}"})
    return [e for e in entries if e["value"] is not None]


def front_matter(recipe: Recipe, metrics: dict, labels: LabelSet, name: str, license: str | None,
                 pipeline_ready: bool) -> dict[str, Any]:
    front: dict[str, Any] = {"library_name": "transformers" if pipeline_ready else "segkit",
                             "pipeline_tag": "image-segmentation",
                             "tags": ["segkit", "semantic-segmentation", recipe.model.family]}
    if license:
        front["license"] = license
    if hub_model_id(recipe.model.checkpoint):  # the Hub rejects a base_model that is no model id
        front["base_model"] = recipe.model.checkpoint
    dataset = dataset_id(recipe)
    if dataset:
        front["datasets"] = [dataset]
    if metrics.get("strict", {}).get("mIoU") is not None:
        data = {"type": dataset or recipe.data.format, "name": dataset or recipe.name,
                **dataset_split(recipe, metrics.get("split", "val"))}
        front["model-index"] = [{"name": name, "results": [{
            "task": {"type": "image-segmentation", "name": "Semantic Segmentation"},
            "dataset": data, "metrics": metric_entries(metrics, labels)}]}]
    return front


def _fmt(v: Any) -> str:
    return "absent" if v is None else f"{v:.4f}"


def _mapping(labels: LabelSet) -> list[str]:
    if not labels.sources:
        return []
    rows = ["| id | class | made from the dataset's classes |", "|---:|---|---|"]
    for i, (name, group) in enumerate(zip(labels.names, labels.sources)):
        shown = ", ".join(group[:12]) + (f", ... ({len(group)} in all)" if len(group) > 12 else "")
        rows.append(f"| {i} | {name} | {shown} |")
    ignored = ", ".join(labels.ignored_sources) or "(none)"
    return ["## Classes", "", *rows, "", f"Ignored (label 255, never scored): {ignored}.", ""]


def _usage(repo: str, family: str, pipeline_ready: bool, exact: bool) -> list[str]:
    lines = ["## Use", ""]
    if pipeline_ready:
        # query-based families' processors default to panoptic post-processing in `pipeline`
        subtask = "semantic" if family in FAMILIES and FAMILIES[family].query_based else None
        lines += ["```python", "from transformers import pipeline", "",
                  f'segmenter = pipeline("image-segmentation", model="{repo}")',
                  'segments = segmenter("photo.jpg"' + (f', subtask="{subtask}"' if subtask else "") + ")",
                  '# one entry per class present: {"label": name, "mask": PIL image, 255 inside}', "```", ""]
        if not exact:
            lines += ["The reported figures feed images padded to the model's stride, which `pipeline` cannot do; "
                      "`segkit predict` reproduces them exactly.", ""]
    else:
        lines += ["This model has segkit's linear head, which transformers does not ship: load it with segkit.", ""]
    lines += ["Whole folders, with masks, overlays and per-image class areas:", "", "```bash", "pip install segkit",
              f"segkit predict {repo} photos/ --output predictions/", "```", ""]
    return lines


def model_card(recipe: Recipe, metrics: dict, labels: LabelSet, config: dict[str, Any], repo_id: str | None = None,
               license: str | None = None, overlays: list[str] | None = None, deploy: list[str] | None = None) -> str:
    """The card for a run: `config` is the saved model's config.json, `overlays` the pictures
    shipped beside it (relative paths), `deploy` a section on exported graphs (segkit.hub.onnx)."""
    model = recipe.model
    family = model.family
    pipeline_ready = config.get("model_type") != "segkit-vit"
    # pipeline cannot pad: it matches segkit exactly unless segkit pads (pad mode; patch models fed whole)
    mode = (config.get("segkit_input") or {}).get("mode", "none")
    exact = mode == "resize" or (mode == "none" and family != "vit")
    name = repo_id or recipe.name
    front = front_matter(recipe, metrics, labels, name, license, pipeline_ready)
    origin = f"fine-tuned from [{model.checkpoint}](https://huggingface.co/{model.checkpoint})" \
        if hub_model_id(model.checkpoint) else \
        (f"fine-tuned from {model.checkpoint}" if model.checkpoint else "trained from random weights")
    dataset = dataset_id(recipe)
    data = f"[{dataset}](https://huggingface.co/datasets/{dataset})" if dataset else f"a {recipe.data.format} dataset"
    split = metrics.get("split", "val")
    table = ["| class | IoU | accuracy |", "|---|---:|---:|"] + [
        f"| {n} | {_fmt(metrics['per_class'][n]['iou'])} | {_fmt(metrics['per_class'][n]['acc'])} |"
        for n in labels.names] if metrics.get("per_class") else ["No evaluation was run."]
    strict, fg = metrics.get("strict", {}), metrics.get("foreground", {})
    pictures = [f"![{Path(p).stem}]({p})" for p in overlays or []]
    body = [
        f"# {name}", "",
        f"Semantic segmentation of **{', '.join(labels.names)}**: a {family} model {origin} on {data}, with segkit.", "",
        *_mapping(labels),
        f"## Results on {split}", "",
        *([f"The {split} split was held out of the dataset's train split ({recipe.data.val_fraction:.0%} of it, "
           f"seed {recipe.data.seed}): the dataset has no {split} split of its own.", ""]
          if split == "val" and recipe.data.val_fraction > 0 and held_out(recipe) else []),
        f"mIoU {_fmt(strict.get('mIoU'))} over all {labels.num_classes} classes"
        + (f"; {_fmt(fg.get('mIoU'))} over the foreground classes (background ignored), which is how subsets "
           "are usually reported" if labels.background is not None else "") + ".", "",
        *table, "", "![confusion matrix](confusion.png)", "", *pictures, *([""] if pictures else []),
        *_usage(repo_id or "PATH/TO/model", family, pipeline_ready, exact), *(deploy or []),
        "## Training recipe", "", "```yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "```", "",
    ]
    return "\n".join(["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", *body])
