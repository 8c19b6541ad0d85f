"""Score a model on a split at the labels' own resolution, and write the report and overlays.

Labels are never resized: the model's scores are upsampled to each label map. Each process scores
its own share of the split and the confusion matrices are summed, so the figures are identical
for one process or many, and memory stays O(C²) whatever the split size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from segkit.labels import LabelSet
from segkit.metrics import ConfusionMatrix, compute_metrics


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, accelerator: Accelerator) -> DataLoader:
    """This process's interleaved share of `dataset`, in order.

    Deliberately not `accelerator.prepare`d: accelerate pads uneven shards by repeating samples,
    and repeated samples would be counted twice in the summed confusion matrix.
    """
    from segkit.data import eval_collate

    share = Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    return DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=eval_collate)


def predict_batch(model: Any, batch: dict[str, torch.Tensor], resized_input: bool) -> list[torch.Tensor]:
    """Per-image predictions at label size, whatever size the model saw.

    `resized_input` says whether images were resized for the model (eval_mode resize): then the
    whole input maps onto the label. Otherwise the image kept its size and sits top-left in a
    padded batch, so the scores are cropped to it.
    """
    from segkit.models.outputs import upsample_scores

    pixels = batch["pixel_values"]
    h_in, w_in = pixels.shape[-2:]
    div = getattr(model, "size_divisor", 1)
    pad_h, pad_w = (-h_in) % div, (-w_in) % div
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))  # bottom/right only, so the content stays top-left
    scores = upsample_scores(model(pixels).scores, tuple(pixels.shape[-2:]))
    preds = []
    for i, (h, w) in enumerate(batch["label_sizes"].tolist()):
        region = scores[i : i + 1, :, :h_in, :w_in] if resized_input else scores[i : i + 1, :, :h, :w]
        if region.shape[-2:] != (h, w):
            region = upsample_scores(region, (h, w))
        preds.append(region.argmax(1)[0])
    return preds


@torch.no_grad()
def evaluate(model: Any, loader: DataLoader, labels: LabelSet, accelerator: Accelerator, resized_input: bool) -> dict:
    """Confusion matrix over this process's share, summed across processes, turned into metrics."""
    was_training = model.training
    model.eval()
    net = accelerator.unwrap_model(model)  # DDP hides size_divisor; eval needs no gradient sync anyway
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index, device=accelerator.device)
    bar = tqdm(loader, desc="evaluate", leave=False, disable=not accelerator.is_local_main_process)
    for batch in bar:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            preds = predict_batch(net, batch, resized_input)
        for pred, (h, w), target in zip(preds, batch["label_sizes"].tolist(), batch["labels"]):
            cm.update(pred, target[:h, :w])
    matrix = accelerator.reduce(cm.matrix, reduction="sum")
    model.train(was_training)
    result = compute_metrics(matrix, labels)
    result["matrix"] = matrix.cpu().tolist()
    return result


@torch.no_grad()
def write_overlays(model: Any, dataset: Dataset, labels: LabelSet, out_dir: Path, count: int,
                   device: torch.device, resized_input: bool) -> list[Path]:
    """image | truth | prediction panels with a legend, for the first `count` samples."""
    from segkit.data import eval_collate
    from segkit.overlays import panel

    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    written = []
    for i in range(min(count, len(dataset))):
        batch = {k: v.to(device) for k, v in eval_collate([dataset[i]]).items()}
        pred = predict_batch(model, batch, resized_input)[0].cpu().numpy()
        image, truth = dataset.raw(i)
        path = out_dir / f"{i:03d}.png"
        panel(image, truth, pred, labels, title=f"sample {i}").save(path)
        written.append(path)
    return written


def check_same_labels(model_labels: LabelSet, data_labels: LabelSet, where: str) -> None:
    """Scoring a model against a differently selected dataset silently gives nonsense: refuse it."""
    if tuple(model_labels.names) != tuple(data_labels.names):
        raise ValueError(
            f"{where}: the model predicts {list(model_labels.names)} but the data recipe selects "
            f"{list(data_labels.names)}. Use the recipe the model was trained with (its run folder "
            "holds recipe.yaml), or change the recipe's classes section to match."
        )


def summary_line(metrics: dict) -> str:
    s, f = metrics["strict"], metrics["foreground"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    return f"mIoU {fmt(s['mIoU'])} (foreground {fmt(f['mIoU'])}), aAcc {fmt(s['aAcc'])}"


def train_share(stats: Any) -> np.ndarray | None:
    """Each class's share of labelled training pixels, shown beside its IoU."""
    try:
        return stats.pixel_share(exclude_ignored=True)
    except AttributeError:
        return None


def report_splits(model: Any, data: Any, splits: list[str], out_dir: Path, accelerator: Accelerator,
                  recipe: Any, extra: dict | None = None) -> dict:
    """Score `model` on each split; write metrics.json, per_class.md, confusion.png, overlays/.

    The last split listed is the headline one (test when there is one): its table, confusion plot
    and overlays are written; metrics.json holds every split.
    """
    from segkit.report import format_table, write_report

    labels = data.labels
    resized = recipe.augment.eval_mode == "resize"
    batch = recipe.train.eval_batch_size or recipe.train.batch_size
    results = {}
    for split in splits:
        loader = eval_loader(getattr(data, split), batch, recipe.train.num_workers, accelerator)
        results[split] = evaluate(model, loader, labels, accelerator, resized_input=resized)
    headline = splits[-1]
    share = train_share(data.stats)
    if accelerator.is_main_process:
        main = results[headline]
        matrix = main.pop("matrix")
        others = {s: {k: v for k, v in m.items() if k != "matrix"} for s, m in results.items() if s != headline}
        write_report(out_dir, main, matrix, labels, train_share=share,
                     extra={"split": headline, "other_splits": others, **(extra or {})})
        write_overlays(model, getattr(data, headline), labels, out_dir / "overlays",
                       recipe.train.num_overlays, accelerator.device, resized)
        procs = f", {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""
        print(f"\nPer-class results on {headline} ({len(getattr(data, headline))} images{procs}):")
        print(format_table(main, labels, share))
        print(summary_line(main))
    accelerator.wait_for_everyone()
    return {s: {k: v for k, v in m.items() if k != "matrix"} for s, m in results.items()}


def finish(t: Any) -> dict:
    """After training: reload the exported model from disk (what users will load) and report on
    val and test."""
    from segkit.models import load_model

    t.accelerator.wait_for_everyone()
    model = load_model(t.run.model).to(t.accelerator.device)
    data = t.data
    splits = [s for s in ("val", "test") if getattr(data, s) is not None]
    if not splits:
        return {}
    extra = {"best_step": t.state.best_step, "steps": t.state.step, "recipe": t.recipe.name}
    return report_splits(model, data, splits, t.run.root, t.accelerator, t.recipe, extra)


def evaluate_saved(model_path: str | Path, recipe: Any, split: str, out_dir: str | Path | None) -> dict:
    """`segkit evaluate`: any saved model (a run folder or a model folder) on any split."""
    from segkit.data import build_data
    from segkit.models import load_model

    path = Path(model_path)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = load_model(path).to(accelerator.device)
    data = build_data(recipe, model.image_mean, model.image_std)
    check_same_labels(model.labels, data.labels, "segkit evaluate")
    if getattr(data, split, None) is None:
        available = [s for s in ("train", "val", "test") if getattr(data, s, None) is not None]
        raise ValueError(f"--split {split}: this recipe's data has no such split. Available: {', '.join(available)}")
    out = Path(out_dir) if out_dir else (path if path.name != "model" else path.parent) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    return report_splits(model, data, [split], out, accelerator, recipe, {"model": str(path)})
