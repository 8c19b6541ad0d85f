"""Losses and class weights against values worked out by hand on tensors of a few pixels."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from segkit.config.sections import LossConfig
from segkit.train.class_weights import MAX_WEIGHT_RATIO, class_weights
from segkit.train.losses import (
    CrossEntropy,
    DiceLoss,
    FocalLoss,
    LovaszSoftmax,
    OhemCrossEntropy,
    build_loss,
    describe_loss,
)

LN2 = math.log(2)


def logits_from_probs(*pixels: list[float]) -> torch.Tensor:
    """(1, C, 1, P) logits whose softmax is exactly the given per-pixel probabilities."""
    probs = torch.tensor(pixels, dtype=torch.float64)  # (P, C)
    probs = probs / probs.sum(1, keepdim=True)
    return probs.log().T[None, :, None, :].float().requires_grad_()


@pytest.fixture
def tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """B=1, C=3, 2x2 pixels; class 2 is absent from the target, one pixel is 255.

    pixel  probs               label  -log p(label)
    0      .5   .25  .25       0      ln 2
    1      .25  .25  .5        1      ln 4
    2      .75  .125 .125      255    -
    3      .125 .75  .125      0      ln 8
    """
    scores = logits_from_probs([2, 1, 1], [1, 1, 2], [6, 1, 1], [1, 6, 1]).reshape(1, 3, 2, 2).detach()
    target = torch.tensor([[[0, 1], [255, 0]]])
    return scores.requires_grad_(), target


def check_backward(loss: torch.Tensor, scores: torch.Tensor) -> None:
    loss.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


# ----------------------------------------------------------------------------- pixel losses


def test_weighted_ce_matches_formula(tiny):
    scores, target = tiny
    loss = CrossEntropy(torch.tensor([1.0, 3.0, 5.0]))(scores, target)
    # sum(w_y * -log p_y) / sum(w_y) over labelled pixels; class 2's weight never enters.
    expected = (1 * math.log(2) + 3 * math.log(4) + 1 * math.log(8)) / (1 + 3 + 1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    check_backward(loss, scores)
    # The 255 pixel gets no gradient at all.
    assert scores.grad[0, :, 1, 0].abs().max() == 0


def test_unweighted_ce(tiny):
    scores, target = tiny
    assert CrossEntropy()(scores, target).item() == pytest.approx((LN2 + 2 * LN2 + 3 * LN2) / 3, rel=1e-5)


def test_ohem_keeps_the_hardest(tiny):
    scores, target = tiny
    # n = 3 labelled, keep 0.5 -> ceil(1.5) = 2 hardest: pixel 3 (ln 8) and pixel 1 (ln 4).
    plain = OhemCrossEntropy(keep=0.5, min_kept=1)(scores, target)
    assert plain.item() == pytest.approx((3 * LN2 + 2 * LN2) / 2, rel=1e-5)
    # With weights the kept pixels are averaged by weight: (1 * ln 8 + 3 * ln 4) / (1 + 3).
    weighted = OhemCrossEntropy(keep=0.5, weight=torch.tensor([1.0, 3.0, 5.0]), min_kept=1)(scores, target)
    assert weighted.item() == pytest.approx((3 * LN2 + 3 * 2 * LN2) / 4, rel=1e-5)
    check_backward(weighted, scores)
    # Only the kept pixels get a gradient: pixel 0 (easiest) and the 255 pixel get none.
    assert scores.grad[0, :, 0, 0].abs().max() == 0
    assert scores.grad[0, :, 1, 0].abs().max() == 0


def test_ohem_min_kept(tiny):
    scores, target = tiny
    # keep 0.1 -> 1 pixel, but min_kept 2 raises it to 2; min_kept above n keeps all 3.
    assert OhemCrossEntropy(0.1, min_kept=2)(scores, target).item() == pytest.approx(5 * LN2 / 2, rel=1e-5)
    assert OhemCrossEntropy(0.1, min_kept=100)(scores, target).item() == pytest.approx(6 * LN2 / 3, rel=1e-5)


def test_focal(tiny):
    scores, target = tiny
    # (1 - p)^2 * -log p per labelled pixel: .5^2 ln2, .75^2 ln4, .875^2 ln8
    terms = [0.25 * LN2, 0.5625 * 2 * LN2, 0.765625 * 3 * LN2]
    assert FocalLoss(2.0)(scores, target).item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    alpha = FocalLoss(2.0, torch.tensor([1.0, 3.0, 5.0]))(scores, target)
    assert alpha.item() == pytest.approx((terms[0] + 3 * terms[1] + terms[2]) / 5, rel=1e-5)
    check_backward(alpha, scores)
    # gamma 0 is cross-entropy.
    ce = CrossEntropy()(scores, target).item()
    assert FocalLoss(0.0)(scores, target).item() == pytest.approx(ce, rel=1e-6)


def test_focal_is_finite_on_confident_pixels():
    scores = torch.tensor([[[[60.0]], [[-60.0]]]], requires_grad=True)  # p(class 0) == 1 in float32
    loss = FocalLoss(0.5)(scores, torch.tensor([[[0]]]))
    assert torch.isfinite(loss)
    check_backward(loss, scores)


# ----------------------------------------------------------------------------- region losses


def test_dice_skips_classes_absent_from_target_and_prediction():
    # labels 0, 0, 255, 1; class 2 is neither labelled nor the argmax of a labelled pixel.
    scores = logits_from_probs([2, 1, 1], [1, 2, 1], [2, 1, 1], [1, 2, 1])
    target = torch.tensor([[[0, 0, 255, 1]]])
    # class 0: 2 * (.5 + .25) / ((.5 + .25 + .25) + 2) = 1/2
    # class 1: 2 * .5 / ((.25 + .5 + .5) + 1) = 4/9
    loss = DiceLoss()(scores, target)
    assert loss.item() == pytest.approx(((1 - 1 / 2) + (1 - 4 / 9)) / 2, rel=1e-5)
    check_backward(loss, scores)


def test_dice_counts_a_predicted_but_absent_class():
    # Pixel 1 is labelled 0 but predicted 2: class 2 enters with Dice 0 (loss 1), penalising it.
    scores = logits_from_probs([2, 1, 1], [1, 1, 2], [2, 1, 1], [1, 2, 1])
    target = torch.tensor([[[0, 0, 255, 1]]])
    # class 0: 2 * .75 / (1 + 2) = 1/2; class 1: 2 * .5 / (1 + 1) = 1/2; class 2: 0
    assert DiceLoss()(scores, target).item() == pytest.approx((0.5 + 0.5 + 1.0) / 3, rel=1e-5)


def lovasz_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real classes (+ a third that is never labelled or likely), labels 1, 0, 1, 255.

    p(class 1) = .8, .4, .3, .9 -> p(class 0) = .2, .6, .7, .1; class 2 gets logit -30 (p ~ 1e-13).
    """
    p1 = torch.tensor([0.8, 0.4, 0.3, 0.9])
    logits = torch.stack([torch.zeros(4), (p1 / (1 - p1)).log(), torch.full((4,), -30.0)])  # (C, P)
    return logits[None, :, None, :].clone().requires_grad_(), torch.tensor([[[1, 0, 1, 255]]])


def test_lovasz_hand_worked():
    scores, target = lovasz_case()
    # Class 0 (G = 1): errors |1[y=0] - p0| = .2, .4, .7 -> sorted .7 (bg), .4 (fg), .2 (bg).
    #   J after each: 1 - 1/2 = .5, 1 - 0/2 = 1, 1 - 0/3 = 1 -> steps .5, .5, 0
    #   loss0 = .7 * .5 + .4 * .5 = .55
    # Class 1 (G = 2): errors |1[y=1] - p1| = .2, .4, .7 -> sorted .7 (fg), .4 (bg), .2 (fg).
    #   J after each: 1 - 1/2 = .5, 1 - 1/3 = 2/3, 1 - 0/3 = 1 -> steps .5, 1/6, 1/3
    #   loss1 = .7 * .5 + .4 / 6 + .2 / 3 = 29/60
    # Class 2 is absent from the target and left out of the mean.
    loss = LovaszSoftmax()(scores, target)
    assert loss.item() == pytest.approx((0.55 + 29 / 60) / 2, abs=1e-6)
    check_backward(loss, scores)


def test_lovasz_equals_one_minus_iou_for_hard_predictions():
    # labels 1, 0, 1; confident predictions 1, 1, 0.
    # IoU_1 = 1/3, IoU_0 = 0/2 -> mean(1 - IoU) over the present classes = (2/3 + 1) / 2.
    sign = torch.tensor([1.0, 1.0, -1.0]) * 20
    scores = torch.stack([-sign, sign])[None, :, None, :]
    loss = LovaszSoftmax()(scores, torch.tensor([[[1, 0, 1]]]))
    assert loss.item() == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)


def test_lovasz_per_image_averages_images():
    scores, target = lovasz_case()
    # Second image: two pixels of class 0, predicted with certainty -> its loss is 0.
    perfect = torch.tensor([20.0, -20.0, -20.0])[:, None, None].expand(3, 1, 4)
    scores2 = torch.cat([scores.detach(), perfect[None]])
    target2 = torch.cat([target, torch.tensor([[[0, 0, 255, 255]]])])
    loss = LovaszSoftmax(per_image=True)(scores2, target2)
    assert loss.item() == pytest.approx((0.55 + 29 / 60) / 2 / 2, abs=1e-6)


def test_composite_is_the_weighted_sum():
    scores, target = lovasz_case()
    ce = (-math.log(0.8) - math.log(0.6) - math.log(0.3)) / 3
    # Dice over labelled pixels: argmax 1, 0, 0 -> classes 0 and 1.
    #   class 0: 2 * .6 / ((.2 + .6 + .7) + 1) = 1.2/2.5; class 1: 2 * 1.1 / (1.5 + 2) = 2.2/3.5
    dice = ((1 - 1.2 / 2.5) + (1 - 2.2 / 3.5)) / 2
    lovasz = (0.55 + 29 / 60) / 2
    loss = build_loss(LossConfig(name="ce", dice=0.5, lovasz=2.0, class_weights=None), num_classes=3)(scores, target)
    assert loss.item() == pytest.approx(ce + 0.5 * dice + 2.0 * lovasz, abs=1e-5)
    check_backward(loss, scores)


# ----------------------------------------------------------------------------- nothing to score


ALL_LOSSES = {
    "ce": CrossEntropy(),
    "weighted_ce": CrossEntropy(torch.tensor([1.0, 2.0, 3.0])),
    "ohem": OhemCrossEntropy(0.25),
    "focal": FocalLoss(2.0, torch.tensor([1.0, 2.0, 3.0])),
    "dice": DiceLoss(),
    "lovasz": LovaszSoftmax(),
    "lovasz_per_image": LovaszSoftmax(per_image=True),
    "all_terms": build_loss(LossConfig(name="focal", dice=1.0, lovasz=1.0, class_weights=[1, 2, 3]), 3),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_all_ignored_batch_is_a_connected_zero(name):
    scores = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = ALL_LOSSES[name](scores, target)
    assert loss.ndim == 0 and loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(scores.grad, torch.zeros_like(scores))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_absent_classes_never_give_nan(name):
    scores = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(2, 4, 4, dtype=torch.long)  # only class 0; classes 1 and 2 absent
    target[1, :2] = 255
    loss = ALL_LOSSES[name](scores, target)
    assert torch.isfinite(loss)
    check_backward(loss, scores)


def test_shape_mismatch_says_how_to_fix():
    loss = build_loss(LossConfig(class_weights=None), 3)
    with pytest.raises(ValueError, match="Upsample"):
        loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


# ----------------------------------------------------------------------------- class weights


def stats(*counts: int) -> SimpleNamespace:
    return SimpleNamespace(pixel_counts=np.array(counts, dtype=np.int64))


def test_inverse_weights():
    # f = .6, .3, .1 -> 1/f = 5/3, 10/3, 10; sum f/f = 3 -> divide by 3
    w = class_weights("inverse", stats(600, 300, 100), 3)
    assert w.tolist() == pytest.approx([5 / 9, 10 / 9, 10 / 3], rel=1e-6)


def test_sqrt_inverse_weights():
    f = [0.6, 0.3, 0.1]
    norm = sum(math.sqrt(x) for x in f)  # sum f / sqrt(f)
    w = class_weights("sqrt_inverse", stats(600, 300, 100), 3)
    assert w.tolist() == pytest.approx([1 / math.sqrt(x) / norm for x in f], rel=1e-6)


def test_enet_weights():
    f = [0.6, 0.3, 0.1]
    raw = [1 / math.log(1.02 + x) for x in f]
    norm = sum(x * r for x, r in zip(f, raw))
    w = class_weights("enet", stats(600, 300, 100), 3)
    assert w.tolist() == pytest.approx([r / norm for r in raw], rel=1e-6)


def test_weights_are_clamped_and_unseen_classes_get_the_max():
    # f = .99, .01, 0 -> 1/f = 1/.99, 100, capped at 50/.99; sum f w = 1 + .01 * 50/.99 = 1.49/.99
    w = class_weights("inverse", stats(990, 10, 0), 3)
    assert w.tolist() == pytest.approx([1 / 1.49, 50 / 1.49, 50 / 1.49], rel=1e-6)
    assert (w.max() / w.min()).item() == pytest.approx(MAX_WEIGHT_RATIO, rel=1e-6)


def test_given_and_missing_weights():
    assert class_weights(None, None, 3) is None
    assert class_weights([1, 2, 0.5], None, 3).tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match="loss.class_weights.*2 weights for 3 classes"):
        class_weights([1, 2], None, 3)
    with pytest.raises(ValueError, match="loss.class_weights"):
        class_weights([1, -2, 1], None, 3)
    with pytest.raises(ValueError, match="no class statistics"):
        class_weights("inverse", None, 3)
    with pytest.raises(ValueError, match="unknown"):
        class_weights("median", stats(1, 1, 1), 3)
    with pytest.raises(ValueError, match="2 classes, the model has 3"):
        class_weights("inverse", stats(1, 1), 3)


def test_build_loss_uses_the_stats():
    loss = build_loss(LossConfig(name="ohem", class_weights="inverse"), 3, stats(600, 300, 100))
    assert loss.weight.tolist() == pytest.approx([5 / 9, 10 / 9, 10 / 3], rel=1e-6)
    assert loss.pixel.keep == 0.25


def test_describe_loss():
    cfg = LossConfig(name="focal", class_weights="inverse", dice=0.5)
    line = describe_loss(cfg, torch.tensor([5 / 9, 10 / 9, 10 / 3]), ["background", "car", "sign"])
    assert line == "loss: focal(gamma=2) + 0.5*dice; class weights inverse: background=0.556 car=1.11 sign=3.33"
    assert describe_loss(LossConfig(), None) == "loss: ce; no class weights"
