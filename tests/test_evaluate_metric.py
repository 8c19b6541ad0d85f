"""segkit's metric through `evaluate` (offline, streaming) and as a `transformers.Trainer`
compute_metrics, inside a real tiny Trainer run; both equal segkit's own figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkit.evaluation.metrics import (
    EVALUATE_MODULE,
    ConfusionMatrix,
    compute_metrics,
    compute_metrics_fn,
    flat_metrics,
    preprocess_logits_for_metrics,
)
from segkit.labels import LabelSet

LABELS = LabelSet(names=("background", "circle", "square", "never"), background=0)


@pytest.fixture(scope="module")
def evaluate_module():
    evaluate = pytest.importorskip("evaluate")  # imported here: it takes seconds
    return evaluate


def masks(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Masks of different sizes over classes 0..2 (class 3 never appears), 10% ignored."""
    rng = np.random.default_rng(seed)
    preds, refs = [], []
    for k in range(n):
        t = rng.integers(0, 3, size=(10 + k, 12))
        preds.append(np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 3, size=t.shape)))
        t[rng.random(t.shape) < 0.1] = 255
        refs.append(t)
    return preds, refs


def segkit_result(preds, refs) -> dict:
    cm = ConfusionMatrix(LABELS.num_classes)
    for p, t in zip(preds, refs):
        cm.update(p, t)
    return compute_metrics(cm.matrix, LABELS)


def test_evaluate_module_loads_offline_streams_and_equals_segkit(evaluate_module):
    metric = evaluate_module.load(EVALUATE_MODULE, class_names=list(LABELS.names), background=0)
    preds, refs = masks(5)
    for p, t in zip(preds, refs):  # sizes differ from mask to mask
        metric.add_batch(predictions=[p], references=[t])
    result = metric.compute()
    assert result == segkit_result(preds, refs)
    assert result["per_class"]["never"]["status"] == "absent" and result["per_class"]["never"]["iou"] is None
    assert result["foreground"]["mIoU"] != result["strict"]["mIoU"]
    assert metric.compute(predictions=preds[:2], references=refs[:2]) == segkit_result(preds[:2], refs[:2])  # reset


def test_evaluate_module_rejects_bad_input(evaluate_module):
    with pytest.raises(ValueError, match="num_labels"):
        evaluate_module.load(EVALUATE_MODULE)
    metric = evaluate_module.load(EVALUATE_MODULE, num_labels=3)
    with pytest.raises(ValueError, match="outside the 3 classes"):
        metric.add_batch(predictions=[np.full((2, 2), 7)], references=[np.zeros((2, 2), int)])
    with pytest.raises(ValueError, match="differ in shape"):
        metric.add_batch(predictions=[np.zeros((2, 3), int)], references=[np.zeros((2, 2), int)])


class TinySegData(torch.utils.data.Dataset):
    def __init__(self, n: int):
        g = torch.Generator().manual_seed(1)
        self.items = []
        for _ in range(n):
            labels = torch.randint(0, 3, (32, 32), generator=g)
            labels[:4] = 255  # ignored rows
            self.items.append({"pixel_values": torch.randn(3, 32, 32, generator=g), "labels": labels})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("batch_eval_metrics", [False, True])
def test_compute_metrics_fn_inside_a_real_trainer(tmp_path, evaluate_module, batch_eval_metrics):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = SegformerConfig(num_labels=4, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                             decoder_hidden_size=16, semantic_loss_ignore_index=255)
    model = SegformerForSemanticSegmentation(config)
    train, val = TinySegData(4), TinySegData(5)  # 5 with batch 2: the last batch is short
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                             per_device_eval_batch_size=2, report_to=[], use_cpu=True, save_strategy="no",
                             remove_unused_columns=False, batch_eval_metrics=batch_eval_metrics,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      compute_metrics=compute_metrics_fn(LABELS), preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    trainer.train()
    with torch.no_grad():
        model.decode_head.classifier.bias[3] = -1e4  # class "never" is never predicted: absent
    got = trainer.evaluate()

    model.eval()
    preds, refs = [], []
    with torch.no_grad():
        for item in val:
            logits = model(pixel_values=item["pixel_values"][None]).logits
            preds.append(preprocess_logits_for_metrics(logits, item["labels"][None])[0].numpy())
            refs.append(item["labels"].numpy())
    expected = flat_metrics(segkit_result(preds, refs))
    assert {k.removeprefix("eval_"): v for k, v in got.items() if k.removeprefix("eval_") in expected} == \
        pytest.approx(expected)
    assert "eval_iou_never" not in got and all(np.isfinite(v) for v in got.values())  # absent: left out, not NaN
    metric = evaluate_module.load(EVALUATE_MODULE, class_names=list(LABELS.names), background=0)
    assert flat_metrics(metric.compute(predictions=preds, references=refs)) == pytest.approx(expected)


def test_trainer_padding_is_ignored():
    """The Trainer joins masks of different sizes padding with -100: those pixels are not scored."""
    score = compute_metrics_fn(LABELS)

    class Pred:
        predictions = np.array([[[1, 1, -100]], [[2, 2, 2]]])
        label_ids = np.array([[[1, 0, -100]], [[2, 255, 2]]])

    out = score(Pred())
    assert out["aAcc"] == pytest.approx(3 / 4)
