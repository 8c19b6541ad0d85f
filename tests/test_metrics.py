"""ConfusionMatrix and compute_metrics against a brute-force reference; the report writers."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.evaluation.metrics import ConfusionMatrix, compute_metrics
from segkit.evaluation.report import format_table, write_report
from segkit.labels import LabelSet

VIEW_KEYS = ("mIoU", "mAcc", "mDice", "aAcc", "fwIoU")


def reference(pred: np.ndarray, target: np.ndarray, scored: list[int], ignore: int = 255) -> dict:
    """Per-class scores and means by boolean masks, one class at a time.

    Written apart from segkit.evaluation.metrics: pixels whose truth is not in `scored` (ignored or, for the
    foreground view, background) are masked out; the prediction is used as it is.
    """
    valid = np.isin(target, scored) & (target != ignore)
    per = {}
    for k in scored:
        t, p = (target == k) & valid, (pred == k) & valid
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        if t.sum() == 0 and p.sum() == 0:
            per[k] = {"iou": None, "acc": None, "dice": None, "gt": 0}
            continue
        per[k] = {
            "iou": tp / (tp + fp + fn),
            "acc": tp / (tp + fn) if t.sum() else None,
            "dice": 2 * tp / (2 * tp + fp + fn),
            "gt": int(t.sum()),
            "pred": int(p.sum()),
        }

    def mean(key):
        vals = [v[key] for v in per.values() if v[key] is not None]
        return sum(vals) / len(vals) if vals else None

    n = int(valid.sum())
    correct = int((valid & (pred == target)).sum())
    fw = sum(v["gt"] * v["iou"] for v in per.values() if v["gt"]) / n if n else None
    return {
        "per": per,
        "view": {
            "mIoU": mean("iou"),
            "mAcc": mean("acc"),
            "mDice": mean("dice"),
            "aAcc": correct / n if n else None,
            "fwIoU": fw,
        },
    }


def assert_close(got, want):
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def check_against_reference(pred: np.ndarray, target: np.ndarray, labels: LabelSet) -> dict:
    cm = ConfusionMatrix(labels.num_classes)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    got = compute_metrics(cm.matrix, labels)
    json.dumps(got, allow_nan=False)  # JSON-serialisable, no NaN

    strict = reference(pred, target, list(range(labels.num_classes)))
    for k, name in enumerate(labels.names):
        want = strict["per"][k]
        for key in ("iou", "acc", "dice"):
            assert_close(got["per_class"][name][key], want[key])
        assert got["per_class"][name]["gt_pixels"] == want["gt"]
        assert got["per_class"][name]["status"] == ("absent" if want["iou"] is None else "present")
    for key in VIEW_KEYS:
        assert_close(got["strict"][key], strict["view"][key])

    fg = reference(pred, target, labels.foreground_ids)
    for key in VIEW_KEYS:
        assert_close(got["foreground"][key], fg["view"][key])
    assert got["num_pixels"] == int((target != 255).sum())
    return got


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("background", [0, 2, None])
def test_random_masks_match_reference(seed, background):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 9))
    if background is not None and background >= c:
        background = 0
    labels = LabelSet(tuple(f"c{i}" for i in range(c)), background=background)
    target = rng.integers(0, c, size=(3, 37, 41)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    # Mostly right predictions, so IoUs spread over 0..1 rather than all near 1/C.
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, c, size=target.shape))
    pred = np.where(pred == 255, 0, pred).astype(np.int64)
    check_against_reference(pred, target, labels)


def test_many_classes_with_uint8_targets():
    # t * C overflows uint8 unless the ids are widened first.
    rng = np.random.default_rng(7)
    labels = LabelSet(tuple(f"c{i}" for i in range(150)), background=0)
    target = rng.integers(0, 150, size=(64, 64)).astype(np.uint8)
    target[:5] = 255
    pred = np.where(rng.random(target.shape) < 0.5, target, rng.integers(0, 150, size=target.shape)) % 150
    check_against_reference(pred.astype(np.int64), target, labels)


def test_all_pixels_ignored():
    labels = LabelSet(("background", "car"), background=0)
    target = np.full((8, 8), 255, np.uint8)
    got = check_against_reference(np.ones((8, 8), np.int64), target, labels)
    assert got["num_pixels"] == 0
    assert all(got["strict"][k] is None for k in VIEW_KEYS)
    assert all(s["status"] == "absent" for s in got["per_class"].values())


def test_single_class():
    labels = LabelSet(("road",))
    target = np.zeros((4, 4), np.uint8)
    target[0] = 255
    got = check_against_reference(np.zeros((4, 4), np.int64), target, labels)
    assert got["strict"]["mIoU"] == 1.0 and got["foreground"] == got["strict"]


def test_absent_class_is_none_and_left_out_of_means():
    labels = LabelSet(("background", "car", "bike"), background=0)
    target = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.int64)
    got = check_against_reference(pred, target, labels)
    bike = got["per_class"]["bike"]
    none = {"iou": None, "acc": None, "dice": None}
    assert bike == {**none, "gt_pixels": 0, "pred_pixels": 0, "status": "absent"}
    assert got["strict"]["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # bike not averaged as 0
    assert got["foreground"]["mIoU"] == pytest.approx(1.0)  # the background pixel predicted car is ignored


def test_background_only_truth():
    labels = LabelSet(("background", "car"), background=0)
    target = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4), np.int64)
    pred[0, 0] = 1
    got = check_against_reference(pred, target, labels)
    # Strict: car was predicted on a background pixel, a false positive -> IoU 0, accuracy undefined.
    assert got["per_class"]["car"]["iou"] == 0.0 and got["per_class"]["car"]["acc"] is None
    # Foreground: no pixel is scored at all.
    assert all(got["foreground"][k] is None for k in VIEW_KEYS)


def test_predicted_but_not_in_truth():
    labels = LabelSet(("car", "bike"))
    target = np.zeros((2, 2), np.uint8)
    pred = np.array([[0, 1], [0, 0]])
    got = check_against_reference(pred, target, labels)
    bike = got["per_class"]["bike"]
    assert bike["status"] == "present" and bike["iou"] == 0.0 and bike["dice"] == 0.0 and bike["acc"] is None
    assert got["strict"]["mIoU"] == pytest.approx(0.75 / 2)
    assert got["strict"]["mAcc"] == pytest.approx(0.75)  # bike has no accuracy to average


def test_foreground_counts_background_predictions_as_misses():
    labels = LabelSet(("background", "car"), background=0)
    target = np.array([[1, 1, 1, 1]], np.uint8)
    pred = np.array([[1, 1, 0, 0]])
    got = check_against_reference(pred, target, labels)
    assert got["foreground"]["mIoU"] == pytest.approx(0.5)
    assert got["foreground"]["aAcc"] == pytest.approx(0.5)


def test_streaming_equals_one_update():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 6, size=(10, 16, 16)).astype(np.uint8)
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, 6, size=target.shape)
    one, many = ConfusionMatrix(6, device="cpu"), ConfusionMatrix(6, device="cpu")
    one.update(torch.from_numpy(pred), torch.from_numpy(target))
    for p, t in zip(pred, target):
        many.update(torch.from_numpy(p), torch.from_numpy(t))
        many.update(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.uint8))
    assert torch.equal(one.matrix, many.matrix)
    assert one.matrix.dtype == torch.int64 and one.matrix.shape == (6, 6)
    assert int(one.matrix.sum()) == int((target != 255).sum())
    one.reset()
    assert int(one.matrix.sum()) == 0


def test_numpy_inputs_and_custom_ignore_index():
    cm = ConfusionMatrix(3, ignore_index=-100)
    cm.update(np.array([0, 1, 2, 2]), np.array([0, 1, -100, 1]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


@pytest.mark.parametrize(
    "pred, target, match",
    [
        ([0, 1], [3, 255], r"\[3\]"),  # target id past the classes
        ([0, 1], [-1, 255], "negative"),
        ([0, 3], [0, 1], "pred holds ids"),
        ([0, 1, 1], [0, 1], "differ in shape"),
        ([0.0, 1.0], [0, 1], "dtype"),
    ],
)
def test_bad_inputs_raise_and_leave_matrix_untouched(pred, target, match):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=match):
        cm.update(torch.tensor(pred), torch.tensor(target))
    assert int(cm.matrix.sum()) == 0


def test_matrix_shape_must_match_labels():
    with pytest.raises(ValueError, match="expected"):
        compute_metrics(np.zeros((3, 3)), LabelSet(("a", "b")))


# --- report -------------------------------------------------------------------------------------


@pytest.fixture
def report_inputs():
    labels = LabelSet(("background", "car", "bike | scooter", "truck"), background=0)
    m = np.array([[50, 2, 0, 0], [3, 20, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m[0, 2] = 1  # bike predicted, never in the truth
    return labels, m, compute_metrics(m, labels), np.array([0.7, 0.2999, 0.00005, 0.0])


def test_format_table(report_inputs):
    labels, _, metrics, share = report_inputs
    table = format_table(metrics, labels, share)
    lines = table.splitlines()
    assert lines[0].startswith("| class") and "train px share" in lines[0]
    truck = next(line for line in lines if line.startswith("| truck"))
    assert "absent" in truck and truck.rstrip().endswith("0% |")
    bike = next(line for line in lines if line.startswith("| bike \\| scooter"))
    assert "n/a" in bike and "<0.01%" in bike  # predicted-only: accuracy undefined; rare share shown
    assert any(line.startswith("| strict") for line in lines)
    assert any(line.startswith("| foreground (background ignored)") for line in lines)
    # Aligned: every row of a table has the same width.
    first = [line for line in lines[: len(labels.names) + 2]]
    assert len({len(line) for line in first}) == 1
    assert "train px share" not in format_table(metrics, labels)


def test_write_report(tmp_path, report_inputs):
    labels, m, metrics, share = report_inputs
    out = tmp_path / "eval"
    # evaluation.py hands the reduced matrix over as nested lists (it is also stored in JSON).
    write_report(out, metrics, m.tolist(), labels, train_share=share, extra={"step": np.int64(12)})
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "per_class.md"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == 12 and saved["per_class"]["truck"]["iou"] is None
    assert saved["strict"] == pytest.approx(metrics["strict"])
    assert (out / "per_class.md").read_text().startswith("# ")
    with Image.open(out / "confusion.png") as img:
        assert img.format == "PNG" and img.width > 100
    with pytest.raises(ValueError, match="overwrite"):
        write_report(out, metrics, m, labels, extra={"strict": 1})
