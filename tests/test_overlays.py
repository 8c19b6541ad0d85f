"""Overlays: exact colours where they must be exact, untouched pixels where nothing is drawn."""

import numpy as np
import pytest
from PIL import Image

from segkit.evaluation.overlays import GAP, blend, colorize, confusion_image, legend, panel
from segkit.labels import LabelSet

# Saturated, non-grey colours: white-on-dark text antialiasing only makes greys, so a pixel of one
# of these colours can only come from a swatch or an overlay.
VIVID = ((200, 30, 40), (20, 180, 60), (30, 60, 220), (230, 200, 10))
LABELS = LabelSet(("background", "car", "person", "sign"), background=0, palette=VIVID)


def scene(h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A grey image and a mask with every class, plus an ignored band."""
    image = np.full((h, w, 3), 128, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 4 : w // 2] = 1
    mask[:, w // 2 : 3 * w // 4] = 2
    mask[:, 3 * w // 4 :] = 3
    mask[: h // 4] = 255
    return image, mask


def swatches(img: Image.Image, palette) -> dict[int, tuple[int, int, int, int]]:
    """Bounding box of the pixels of each palette colour that occurs, by class id."""
    a = np.asarray(img.convert("RGB"))
    found = {}
    for k, colour in enumerate(palette):
        ys, xs = np.nonzero((a == colour).all(axis=2))
        if len(ys):
            found[k] = (xs.min(), ys.min(), xs.max(), ys.max(), len(ys))
    return found


def test_colorize_uses_palette_and_black_for_ignored():
    _, mask = scene()
    rgb = colorize(mask, LABELS)
    assert rgb.shape == (*mask.shape, 3) and rgb.dtype == np.uint8
    for k in range(4):
        assert tuple(rgb[-1][mask[-1] == k][0]) == VIVID[k]
    assert (rgb[mask == 255] == 0).all()


def test_colorize_rejects_ids_outside_the_label_set():
    with pytest.raises(ValueError, match=r"\[7\]"):
        colorize(np.array([[0, 7]], np.uint8), LABELS)


def test_blend_alpha_one_paints_exact_colours_and_leaves_background_and_ignored():
    image, mask = scene()
    out = np.asarray(blend(Image.fromarray(image), mask, LABELS, alpha=1.0))
    for k in (1, 2, 3):
        assert (out[mask == k] == VIVID[k]).all()
    assert (out[mask == 0] == 128).all()  # background untinted
    assert (out[mask == 255] == 128).all()  # ignored untinted


def test_blend_mixes_and_accepts_float_images():
    image, mask = scene()
    half = np.asarray(blend(image.astype(np.float32) / 255.0, mask, LABELS, alpha=0.5))
    expected = np.round((128 + np.array(VIVID[1])) / 2)
    assert (half[mask == 1] == expected).all()
    assert (np.asarray(blend(image, mask, LABELS, alpha=0.0)) == image).all()


def test_blend_rejects_size_mismatch():
    image, mask = scene()
    with pytest.raises(ValueError, match="must match"):
        blend(image[:10], mask, LABELS)


def test_legend_one_swatch_per_class():
    img = legend(LABELS)
    found = swatches(img, VIVID)
    assert sorted(found) == [0, 1, 2, 3]
    for x0, y0, x1, y1, n in found.values():
        assert x1 - x0 == y1 - y0 >= 8  # a square ...
        assert n == (x1 - x0 + 1) * (y1 - y0 + 1)  # ... filled with the colour
    tops = sorted(box[1] for box in found.values())
    assert len(set(tops)) == 4  # one row each, stacked


def test_legend_only_present_and_flowing_strip():
    assert sorted(swatches(legend(LABELS, present=[3, 1, 255]), VIVID)) == [1, 3]
    strip = legend(LABELS, max_width=600)
    assert strip.width == 600
    assert len({box[1] for box in swatches(strip, VIVID).values()}) == 1  # all on one row
    assert legend(LABELS, present=[]).height > 0


def test_panel_three_columns_with_legend_of_present_classes():
    image, truth = scene()
    pred = truth.copy()
    pred[pred == 3] = 0  # sign missed
    out = panel(image, truth, pred, LABELS, title="sample")
    w = image.shape[1]
    assert out.width == 3 * w + 2 * GAP
    found = swatches(out, VIVID)
    assert sorted(found) == [1, 2, 3]  # sign is in the truth; background has no swatch
    assert all(box[1] > image.shape[0] for box in found.values())  # exact colours only in the legend

    no_truth = panel(image, None, pred, LABELS)
    assert no_truth.width == 2 * w + GAP
    assert sorted(swatches(no_truth, VIVID)) == [1, 2]


def test_panel_downscales_large_images():
    image, truth = scene(1024, 1536)
    out = panel(Image.fromarray(image), truth, truth, LABELS, max_height=512)
    assert out.width == 3 * 768 + 2 * GAP
    assert 512 < out.height < 700


def test_panel_rejects_mask_of_other_size():
    image, truth = scene()
    with pytest.raises(ValueError, match="resize"):
        panel(image, truth, truth[:-1], LABELS)


@pytest.mark.parametrize("normalize", ["true", "pred", None])
def test_confusion_image_is_a_png(tmp_path, normalize):
    m = np.array([[50, 2, 0, 0], [3, 20, 1, 0], [0, 0, 0, 0], [0, 4, 0, 9]])
    img = confusion_image(m, LABELS, normalize=normalize, title="val")
    path = tmp_path / "cm.png"
    img.save(path)
    with Image.open(path) as back:
        assert back.format == "PNG" and back.size == img.size and back.mode == "RGB"


def test_confusion_image_many_classes_and_bad_args():
    labels = LabelSet(tuple(f"class_{i}" for i in range(30)))
    rng = np.random.default_rng(0)
    img = confusion_image(rng.integers(0, 100, (30, 30)), labels)
    assert img.width >= 30 * 12 and img.height >= 30 * 12
    with pytest.raises(ValueError, match="normalize"):
        confusion_image(np.eye(4), LABELS, normalize="all")
    with pytest.raises(ValueError, match="shape"):
        confusion_image(np.eye(3), LABELS)
