"""MaskFormer/Mask2Former targets built in the training collate on the CPU give the set loss of the
targets built on the device, to the bit; the pixel losses' sync-free forms give the same values."""

from __future__ import annotations

import pytest
import torch

from segkit.data.dataset import TargetCollate
from segkit.models import build_model
from segkit.models.maskformer import SemanticTargets, semantic_to_targets
from segkit.train.losses import DiceLoss, OhemCrossEntropy, _class_counts
from tests.test_models import LABELS, learnable_batch, tiny


def test_collate_targets_are_the_device_targets():
    labels = torch.tensor([[[0, 2], [255, 2]], [[255, 255], [255, 255]], [[1, 1], [0, 7]]], dtype=torch.uint8)
    expected = semantic_to_targets(labels.long(), num_classes=3)  # 7 is no class of 3: dropped as 255 is
    build = SemanticTargets(3)
    for k, seg in enumerate(labels):
        masks, ids = build(seg)
        assert masks.dtype == torch.bool and ids.dtype == torch.int64
        assert torch.equal(masks.float(), expected[0][k]) and torch.equal(ids, expected[1][k])


@pytest.mark.parametrize("family", ["maskformer", "mask2former"])
def test_set_loss_from_collate_targets_is_the_same_to_the_bit(family: str):
    torch.manual_seed(0)
    model = build_model(tiny(family), LABELS)
    images, labels = learnable_batch()
    batch = TargetCollate(model.train_targets())(
        [{"pixel_values": im, "labels": lab.to(torch.uint8), "index": i} for i, (im, lab) in enumerate(zip(images, labels))])
    losses = []
    for targets in ({}, {"mask_labels": batch["mask_labels"], "class_labels": batch["class_labels"]}):
        torch.manual_seed(1)  # dropout, and Mask2Former's sampled points
        losses.append(model(images, labels=labels, **targets).loss)
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])


def _scores_and_target(ignored_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 4, 48, 40, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 48, 40), generator=g)
    target[torch.rand(target.shape, generator=g) < ignored_share] = 255
    return scores, target


@pytest.mark.parametrize("ignored", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("keep,min_kept", [(0.25, 4096), (0.3, 10)])
def test_ohem_without_a_host_sync_keeps_the_same_pixels(ignored: float, keep: float, min_kept: int):
    scores, target = _scores_and_target(ignored)
    loss = OhemCrossEntropy(keep, torch.tensor([0.5, 1.0, 2.0, 1.5]), min_kept=min_kept)
    topk = loss(scores, target)  # the CPU form (topk with k read on the host)
    nll = torch.nn.functional.cross_entropy(scores, target, ignore_index=255, reduction="none").flatten()
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])[target.flatten().clamp(max=3)] * (target.flatten() != 255)
    labelled = target.flatten() != 255
    sorted_ = loss._sorted(nll, weights, nll.detach().masked_fill(~labelled, float("-inf")), labelled.sum())
    assert torch.allclose(sorted_, topk, rtol=1e-6, atol=0)
    sorted_.backward()
    assert torch.isfinite(scores.grad).all()


def test_dice_counts_without_bincount_are_the_same():
    scores, target = _scores_and_target(0.3)
    valid = target != 255
    expected = torch.bincount(target.masked_fill(~valid, 4).flatten(), minlength=5)[:4]
    assert torch.equal(_class_counts(target, valid, 4), expected)
    assert torch.isfinite(DiceLoss()(scores, target))
