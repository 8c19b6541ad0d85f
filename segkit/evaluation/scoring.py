"""Score a model on a split at the labels' own resolution: a confusion matrix, then metrics.

Labels are never resized: the model's scores are brought to each label map by the one inference
path (`segkit.infer.segment`), the same that `segkit predict` and the exported image processor use.
Each process scores its own share of the split and the confusion matrices are summed, so the
figures are identical for one process or many, and memory stays O(C²) whatever the split size.

`evaluate` runs inside training and in `evaluate_saved` (`segkit evaluate`); `segkit.evaluation.report`
writes the results down.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from segkit.config.recipe import Recipe
from segkit.data.dataset import DataBundle, build_data
from segkit.data.loaders import eval_loader
from segkit.data.source import SPLITS
from segkit.evaluation.html_report import write_html
from segkit.evaluation.metrics import ConfusionMatrix, ImageTally, compute_metrics
from segkit.evaluation.report import train_share, write_final_report
from segkit.infer.scores import describe_tta, eval_transform
from segkit.infer.segment import Job, segment
from segkit.labels import LabelSet, check_same_labels
from segkit.models.base import SegModel
from segkit.models.build import load_model
from segkit.models.locate import looks_local
from segkit.processes import end_processes
from segkit.run_folder import Report, RunFolder


@torch.no_grad()
def evaluate(model: Any, loader: DataLoader, labels: LabelSet, accelerator: Accelerator,
             mixed_precision: bool = False, per_image: bool = False, flip: bool = False,
             scales: Sequence[float] = (1.0,)) -> dict[str, Any]:
    """Confusion matrix over this process's share, summed across processes, turned into metrics
    (plus the matrix itself, as nested lists, under "matrix").

    `per_image` also scores each image from its own small confusion matrix in the same pass
    (`ImageTally`): rows gathered from every process, sorted by index, under "per_image".
    `flip` and `scales` are test-time augmentation, applied by `segment` (the one dispatch).

    Reports run in full precision, as `pipeline` and `segkit predict` do by default, so that they
    reproduce them; `mixed_precision` (the training's autocast) is for evaluations inside training,
    which only pick the best checkpoint.
    """
    was_training = model.training
    model.eval()
    net = accelerator.unwrap_model(model)  # DDP hides the model's attributes; eval needs no gradient sync
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index, device=accelerator.device)
    bar = tqdm(loader, desc="evaluate", leave=False, disable=not accelerator.is_local_main_process)
    autocast = accelerator.autocast if mixed_precision else None
    dataset = loader.dataset.dataset  # eval loaders hold a Subset: this process's share
    tally = ImageTally(cm, labels, per_image)
    for batch in bar:
        targets = batch["labels"]
        jobs = [Job(tuple(t.shape[-2:]), batch["pixel_values"][i], partial(raw_image, dataset, int(batch["index"][i])))
                for i, t in enumerate(targets)]
        for i, mask in segment(net, jobs, accelerator.device, autocast, flip, scales=scales):
            tally.update(int(batch["index"][i]), mask, targets[i].to(accelerator.device))
    matrix = accelerator.reduce(cm.matrix, reduction="sum")
    model.train(was_training)
    result = compute_metrics(matrix, labels)
    result["matrix"] = matrix.cpu().tolist()
    if per_image:
        result["per_image"] = sorted(gather_object(tally.rows), key=lambda r: r["index"])
    return result


def raw_image(dataset: Any, index: int) -> Any:
    """The original image of item `index`, for an image that goes through sliding windows."""
    return dataset.raw(index)[0]


def score_splits(model: Any, data: DataBundle, splits: list[str], accelerator: Accelerator,
                 batch_size: int, num_workers: int, flip: bool = False,
                 scales: Sequence[float] = (1.0,)) -> dict[str, dict[str, Any]]:
    """`evaluate` on each named split of `data`."""
    results = {}
    for split in splits:
        loader = eval_loader(getattr(data, split), batch_size, num_workers, accelerator.process_index,
                             accelerator.num_processes)
        results[split] = evaluate(model, loader, data.labels, accelerator, per_image=True, flip=flip, scales=scales)
    return results


def report_splits(model: SegModel, data: DataBundle, splits: list[str], report: Report, accelerator: Accelerator,
                  recipe: Recipe, extra: dict | None = None, flip: bool = False,
                  scales: Sequence[float] = (1.0,)) -> dict[str, dict[str, Any]]:
    """Score `model` on each split and write the report of the last one listed (the headline:
    test when there is one); metrics.json holds every split, and which test-time augmentation
    produced them ("tta")."""
    batch = recipe.train.eval_batch_size or recipe.train.batch_size
    results = score_splits(model, data, splits, accelerator, batch, recipe.train.num_workers, flip, scales)
    extra = {"tta": describe_tta(scales, flip), **(extra or {})}
    if accelerator.is_main_process:
        write_final_report(report, results, splits[-1], model, getattr(data, splits[-1]), train_share(data.stats),
                           recipe.train.num_overlays, extra or {}, accelerator.num_processes)
        write_html(report)
    accelerator.wait_for_everyone()
    return {s: {k: v for k, v in m.items() if k not in ("matrix", "per_image")} for s, m in results.items()}


def evaluate_saved(model_path: str | Path, recipe: Recipe, split: str, out_dir: str | Path | None,
                   revision: str | None = None, flip: bool = False, scales: Sequence[float] = (1.0,)) -> dict:
    """`segkit evaluate`: a saved model (a run folder, a model folder or a Hub id) on a split of a
    recipe's data. Images are fed the way the model says (its saved input spec), whatever the recipe."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = load_model(model_path, revision=revision).to(accelerator.device)
    data = build_data(recipe, model.image_mean, model.image_std, eval_transform=eval_transform(model))
    check_same_labels(model.labels, data.labels, f"The model {model_path}")
    if getattr(data, split, None) is None:
        available = [s for s in SPLITS if getattr(data, s, None) is not None]
        raise ValueError(f"--split {split}: this recipe's data has no such split. Available: {', '.join(available)}")
    path = Path(model_path)
    if out_dir:
        report = Report(out_dir)
    elif looks_local(model_path):
        report = RunFolder(path if path.name != "model" else path.parent).eval_report(split)
    else:  # a Hub id: a folder here named after it
        report = Report(Path(f"eval-{str(model_path).replace('/', '--')}-{split}"))
    results = report_splits(model, data, [split], report, accelerator, recipe, {"model": str(model_path)}, flip, scales)
    end_processes(accelerator)
    return results
