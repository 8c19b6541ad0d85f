"""A calibrated head: one additive logit offset per class, fitted on val, folded into the bias.

A class weighted up in the loss (or merely rare) is often painted on far more pixels than it
covers: its logit sits too high everywhere, a bias problem. After training, the model's val
scores are computed once, on a seeded sample of labelled pixels (`PIXELS_PER_IMAGE` per image),
and a coordinate search fits one offset per class that maximises val mIoU on that sample: for
class c, every pixel's prediction depends on `score_c + b_c` against the best other class only,
so each candidate offset costs one comparison and one bincount. Offsets stay within `CLAMP`.

The offsets are added to the classifier's bias (`SegModel.classifier_name`: SegFormer's
`decode_head.classifier`, UperNet's `decode_head.classifier`, the linear head's `classifier`),
so the exported model, `pipeline` and ONNX carry them at no cost. That is exact for these
families: their scores are the classifier's logits, and resizing them to the label (bilinear,
weights summing to 1) or blending windows moves a constant offset through unchanged.

MaskFormer and Mask2Former are left out. Their pixel score is sum_q softmax(class logits_q)_c x
mask_q: an offset on the class logits goes through each query's softmax, whose normaliser
differs per query, so it does not shift or scale pixel scores by one factor per class, and a fit
on cached pixel scores would not be what the folded bias does. The knob that fits their scores
is a per-class factor on the probabilities, which no bias of `class_predictor` can carry.

It is off unless a recipe asks (`train.calibrate: true` or `auto`): offsets fitted on val
only carry to images drawn like val, which segkit cannot check. On the races' CamVid test, whose
sequences are not val's, every fit that `auto` kept lowered the chosen classes' mean IoU by 0.8
to 2.9 points (BENCHMARKS.md), though each passed the held-out check below.

`train.calibrate: auto` keeps the offsets only where they hold up. The val split is cut into
two contiguous halves, in its order; offsets fitted on either half must raise the other half's
mIoU by `MARGIN` (both ways round). Halves, not alternate images: the images of a split are often
frames of one video or tiles of one scene, and a check on the frame next to each fitted one
measures how alike neighbours are, not whether the offsets carry to images not seen. The offsets
folded are then fitted on the whole sample. Last, the final report scores the folded model on
the whole val split, and if val mIoU fell there the offsets are taken out again and the report is
made once more (`confirm_calibration`).

The cost is one val pass (the fit's sample, which also gives the val figures before), since the
report's own val pass is the check. The test figure before calibration costs a test pass of its
own; under `train.time_budget` it is left out, so that the budget goes to training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from segkit.data.loaders import eval_loader
from segkit.data.source import SPLITS
from segkit.evaluation.metrics import ConfusionMatrix, compute_metrics
from segkit.evaluation.scoring import evaluate, raw_image
from segkit.infer.scores import scores_for
from segkit.infer.segment import Job, segment
from segkit.infer.sliding import Windows
from segkit.labels import LabelSet
from segkit.models.registry import FAMILIES
from segkit.train.saving import write_model

PIXELS_PER_IMAGE = 2048
CLAMP = 3.0
"""Largest |offset|, in logits: a calibration, not a new classifier."""
MARGIN = 0.005
"""`auto`: the held-out val gain in mIoU (0.5 points) the offsets must reach to be kept."""
GRID = torch.linspace(-CLAMP, CLAMP, 25)
ROUNDS = 3


@dataclass
class ValSample:
    scores: torch.Tensor
    """(N, C) float32 logits of the sampled labelled pixels."""
    targets: torch.Tensor
    """(N,) int64 truth of those pixels."""
    image: torch.Tensor
    """(N,) int64 index of the val image each pixel comes from (for the held-out split)."""


@torch.no_grad()
def sample_val(model: Any, loader: DataLoader, labels: LabelSet, device: Any, seed: int = 0,
               per_image: int = PIXELS_PER_IMAGE) -> tuple[ValSample | None, torch.Tensor]:
    """Scores of a seeded sample of each val image's labelled pixels, at label size, through the
    one inference path, gathered from every process (None when no val image is scored whole);
    and this process's confusion matrix of every val pixel, images that slide included: the
    uncalibrated val figures, from the same pass."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    scores, targets, images = [], [], []
    windows = Windows()
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index, device=device)
    for batch in loader:
        # images that `segment` would send through sliding windows are left out: their scores
        # come from windows, and the sample holds whole-image scores only
        whole = [i for i, t in enumerate(batch["labels"]) if not windows.applies(model.input_spec, *t.shape[-2:])]
        truth = [batch["labels"][i] for i in whole]
        inputs = [batch["pixel_values"][i] for i in whole]
        rest = [i for i in range(len(batch["labels"])) if i not in whole]
        slid = [Job(tuple(batch["labels"][i].shape[-2:]), None,
                    partial(raw_image, loader.dataset.dataset, int(batch["index"][i]))) for i in rest]
        for k, mask in segment(model, slid, device):
            cm.update(mask, batch["labels"][rest[k]].to(mask.device))
        for k, s in scores_for(model, inputs, [tuple(t.shape[-2:]) for t in truth], device):
            cm.update(s.argmax(0), truth[k].to(s.device))
            t = truth[k].flatten()
            keep = (t != labels.ignore_index).nonzero().flatten()
            pick = keep[torch.randperm(len(keep), generator=gen)[:per_image]]
            scores.append(s.flatten(1)[:, pick.to(s.device)].T.float().cpu())
            targets.append(t[pick].long())
            images.append(torch.full((len(pick),), int(batch["index"][whole[k]]), dtype=torch.long))
    model.train(was_training)
    parts = gather_object([(torch.cat(scores), torch.cat(targets), torch.cat(images))] if scores else [])
    sample = ValSample(*(torch.cat([p[i] for p in parts]) for i in range(3))) if parts else None
    return sample, cm.matrix


def miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, background: int | None = None) -> float:
    """Mean IoU of present classes, as `segkit.evaluation.metrics` scores it; with `background`,
    the foreground view (background truth ignored, its column kept)."""
    m = torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes).double()
    scored = [c for c in range(num_classes) if c != background]
    rows = m[scored]
    tp = rows[range(len(scored)), scored]
    union = rows.sum(1) + rows[:, scored].sum(0) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0


def fit_offsets(scores: torch.Tensor, targets: torch.Tensor, background: int | None = None) -> torch.Tensor:
    """(C,) offsets that maximise `miou` of argmax(scores + offsets): coordinate search on `GRID`,
    `ROUNDS` passes over the classes; an offset moves only when it strictly helps."""
    c = scores.shape[1]
    b = torch.zeros(c)
    best = miou(scores.argmax(1), targets, c, background)
    for _ in range(ROUNDS):
        moved = False
        for k in range(c):
            others = (scores + b).clone()
            others[:, k] = -float("inf")
            rival, rival_id = others.max(1)
            for v in GRID:
                pred = torch.where(scores[:, k] + v > rival, k, rival_id)
                score = miou(pred, targets, c, background)
                if score > best + 1e-9:
                    best, b[k], moved = score, float(v), True
        if not moved:
            break
    return b


def classifier_bias(model: Any) -> torch.nn.Parameter:
    """The bias of the model's final classifier, one entry per class."""
    bias = model.get_submodule(model.classifier_name).bias
    if bias is None:
        raise ValueError(f"{model.family}: its classifier has no bias to carry the offsets")
    return bias


@torch.no_grad()
def fold(model: Any, offsets: torch.Tensor) -> None:
    """Add the offsets to the classifier's bias: nothing else in the model changes."""
    bias = classifier_bias(model)
    bias[: len(offsets)] += offsets.to(bias)


def fit_calibration(sample: ValSample, labels: LabelSet, view: str) -> dict[str, Any]:
    """Offsets fitted on the whole sample, and how offsets fitted on one half of the val split did
    on the other (both ways round): mIoU before and after on each held-out half, and `gain`, the
    worse half's (what `auto` decides by). With a single val image there is nothing to hold out,
    and the check is on the fit's own pixels."""
    background = labels.background if view == "foreground" else None
    c = labels.num_classes
    ids = sample.image.unique()  # sorted: the split's order
    first = torch.isin(sample.image, ids[: len(ids) // 2])
    folds = [(first, ~first), (~first, first)] if len(ids) > 1 else [(~first, ~first)]
    before, after = [], []
    for fit_on, held in folds:
        offsets = fit_offsets(sample.scores[fit_on], sample.targets[fit_on], background)
        before.append(miou(sample.scores[held].argmax(1), sample.targets[held], c, background))
        after.append(miou((sample.scores[held] + offsets).argmax(1), sample.targets[held], c, background))
    offsets = fit_offsets(sample.scores, sample.targets, background)
    gain = min(a - b for a, b in zip(after, before))
    return {"offsets": offsets, "held_out_before": before, "held_out_after": after, "gain": gain}


def _views(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"strict_mIoU": metrics["strict"]["mIoU"], "foreground_mIoU": metrics["foreground"]["mIoU"]}


def calibrate_run(model: Any, data: Any, run: Any, accelerator: Any, cfg: Any, family: str,
                  test_before: bool = True) -> dict[str, Any] | None:
    """`train.calibrate` on the exported model (already loaded): fit, decide, fold, rewrite model/.
    `test_before`: also score test before folding (a test pass, for the report only).

    Returns what metrics.json records under "calibration" (the offsets, whether they were kept
    and why, val and test before), or None when calibration is off or there is no val split. A
    kept `auto` calibration is provisional until `confirm_calibration` has seen the val figures.
    """
    if cfg.calibrate is False or data.val is None:
        return None
    if FAMILIES[family].query_based:
        return {"kept": False, "why": f"{family} scores pixels with query probabilities, which a class-logit bias "
                                      "cannot shift per class (segkit/train/calibrate.py)"}
    labels, view = data.labels, cfg.select_by
    batch = cfg.eval_batch_size or cfg.batch_size

    def loader(split: Any) -> DataLoader:
        return eval_loader(split, batch, cfg.num_workers, accelerator.process_index, accelerator.num_processes)

    sample, matrix = sample_val(model, loader(data.val), labels, accelerator.device, seed=cfg.seed)
    matrix = accelerator.reduce(matrix, reduction="sum")
    if sample is None:
        return {"kept": False, "why": "every val image goes through sliding windows, and the fit needs whole-image "
                                      "scores"}
    found = fit_calibration(sample, labels, view)
    offsets = found["offsets"]
    out: dict[str, Any] = {"view": view, "offsets": dict(zip(labels.names, offsets.tolist())),
                           "held_out": {"before": found["held_out_before"], "after": found["held_out_after"]},
                           "val_before": _views(compute_metrics(matrix, labels))}
    held_out = f"held-out val mIoU gain {100 * found['gain']:+.2f} points on the worse half"
    if not offsets.abs().sum():
        out.update(kept=False, why="the fit found no offset that raises val mIoU")
        return out
    if cfg.calibrate == "auto" and found["gain"] < MARGIN:
        out.update(kept=False, why=f"{held_out}, under {100 * MARGIN:.1f}")
        return out
    if data.test is not None and test_before:
        out["test_before"] = _views(evaluate(model, loader(data.test), labels, accelerator))
    fold(model, offsets)
    write_model(model, run, accelerator)
    out.update(kept=True, why=held_out if cfg.calibrate == "auto" else "train.calibrate: true")
    return out


def confirm_calibration(model: Any, calibration: dict[str, Any] | None, val: dict[str, Any] | None, run: Any,
                        accelerator: Any, cfg: Any) -> bool:
    """`auto`'s last check, on the report's val figures of the folded model: if val mIoU fell on
    the whole split, take the offsets out of the model (and model/) again. Returns True when it
    did, and the report must be made again."""
    if cfg.calibrate != "auto" or not calibration or not calibration.get("kept") or val is None:
        return False
    key = f"{calibration['view']}_mIoU"
    if (_views(val)[key] or 0) >= (calibration["val_before"][key] or 0):
        return False
    fold(model, -torch.tensor(list(calibration["offsets"].values())))
    write_model(model, run, accelerator)
    calibration.update(kept=False, why="val mIoU fell on the whole split")
    return True


def describe_calibration(calibration: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    """One line for the log: the offsets and val/test before -> after."""
    if "offsets" not in calibration:
        return f"calibration: skipped ({calibration['why']})"
    key = f"{calibration['view']}_mIoU"
    parts = []
    for split in (s for s in SPLITS if s != "train"):
        before = calibration.get(f"{split}_before", {}).get(key)
        after = results.get(split, {}).get(calibration["view"], {}).get("mIoU")
        if before is not None and after is not None:
            parts.append(f"{split} {100 * before:.1f} -> {100 * after:.1f}")
    offsets = ", ".join(f"{n} {v:+.2f}" for n, v in calibration["offsets"].items())
    verdict = "kept" if calibration["kept"] else "not kept"
    return f"calibration ({verdict}: {calibration['why']}): offsets {offsets}; {calibration['view']} mIoU " + ", ".join(parts)
