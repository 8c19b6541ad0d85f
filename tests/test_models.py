"""Model families: one shared train / save / reload test over every family at tiny size, then the
output adapter, the label conversion for MaskFormer-style models and the user-facing errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from segkit.config.recipe import load_recipe
from segkit.config.sections import LossConfig, ModelConfig
from segkit.infer.scores import upsample_scores
from segkit.labels import LabelSet
from segkit.models import FAMILIES, ModelError, build_model, load_model, to_scores
from segkit.models.maskformer import semantic_to_targets

LABELS = LabelSet(names=("background", "car", "person"), background=0)
RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# (family, head): every family once, and the vit family with both of its heads.
CASES = [("segformer", None), ("maskformer", None), ("mask2former", None), ("vit", "linear"),
         ("vit", "multilevel")]


def tiny(family: str, head: str | None = None, **kw) -> ModelConfig:
    return ModelConfig(family=family, size="tiny", **({"head": head} if head else {}), **kw)


def learnable_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 images: image 0 has a bright square (car) and a mid-grey one (person) on a dark
    background; image 1 is labelled 255 everywhere, i.e. it holds no chosen class at all."""
    g = torch.Generator().manual_seed(0)
    images = torch.full((2, 3, 64, 64), -1.5) + 0.1 * torch.randn(2, 3, 64, 64, generator=g)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    images[0, :, 8:32, 8:32] += 3.0
    labels[0, 8:32, 8:32] = 1
    images[0, :, 40:60, 32:56] += 1.5
    labels[0, 40:60, 32:56] = 2
    labels[1] = 255  # nothing to learn here: the loss must still run
    return images, labels


def loss_of(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = model(images, labels)
    if model.has_own_loss:
        return out.loss
    scores = upsample_scores(out.scores, labels.shape[-2:])
    return F.cross_entropy(scores, labels, ignore_index=255)


@pytest.mark.parametrize("family,head", CASES, ids=[f"{f}-{h}" if h else f for f, h in CASES])
def test_family_trains_saves_and_reloads(family: str, head: str | None, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(family, head), LABELS)
    images, labels = learnable_batch()
    backbone, new = model.param_groups()
    trainable = [p for p in model.parameters() if p.requires_grad]  # never-used ones are frozen
    assert backbone and new and len(backbone) + len(new) == len(trainable)
    # 3e-4 rather than 1e-3: MaskFormer's matched set loss jumps around at 1e-3 on so few steps.
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(8):
        loss = loss_of(model, images, labels)
        assert torch.isfinite(loss), f"{family}: loss is {loss}"
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < losses[0], f"{family}: loss did not fall: {losses}"

    out = model(images)
    assert out.scores.shape[:2] == (2, 3) and out.scores.ndim == 4
    assert not torch.isnan(out.scores).any()
    assert out.loss is None  # no labels, no loss

    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in tmp_path.iterdir()}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "car", "2": "person"}
    assert config["segkit_family"] == family and config["segkit_labels"]["names"] == list(LABELS.names)
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == list(model.image_mean)

    reloaded = load_model(tmp_path)
    assert type(reloaded) is type(model) and reloaded.labels == LABELS
    assert not reloaded.training
    assert torch.equal(model.predict(images, (64, 64)), reloaded.predict(images, (64, 64)))
    assert model.predict(images, (64, 64)).dtype == torch.int64


def test_to_scores_matches_manual_maskformer_computation() -> None:
    torch.manual_seed(0)
    cls_logits = torch.randn(2, 5, 4)  # B=2, Q=5, C=3 + null class
    mask_logits = torch.randn(2, 5, 6, 7)
    out = SimpleNamespace(class_queries_logits=cls_logits, masks_queries_logits=mask_logits)
    expected = torch.zeros(2, 3, 6, 7)
    for b in range(2):
        for q in range(5):
            probs = torch.softmax(cls_logits[b, q], 0)[:3]
            expected[b] += probs[:, None, None] * torch.sigmoid(mask_logits[b, q])[None]
    torch.testing.assert_close(to_scores(out), expected)
    assert to_scores(out, size=(12, 14)).shape == (2, 3, 12, 14)


def test_to_scores_passes_logits_and_refuses_unknown_outputs() -> None:
    logits = torch.randn(1, 3, 4, 4)
    assert to_scores(SimpleNamespace(logits=logits)) is logits
    assert upsample_scores(logits, (4, 4)) is logits
    with pytest.raises(TypeError, match="class_queries_logits"):
        to_scores(SimpleNamespace(foo=1))


def test_semantic_to_targets_keeps_255_out_of_every_mask() -> None:
    labels = torch.tensor([[[0, 2], [255, 2]], [[255, 255], [255, 255]]])
    masks, classes = semantic_to_targets(labels, num_classes=3)
    assert classes[0].tolist() == [0, 2]
    assert masks[0].dtype == torch.float32
    assert masks[0].tolist() == [[[1, 0], [0, 0]], [[0, 1], [0, 1]]]
    assert masks[1].shape == (0, 2, 2) and classes[1].shape == (0,)


def test_loss_knobs_reach_the_maskformer_configs() -> None:
    knobs = LossConfig(no_object_weight=0.3, class_coef=2.5, mask_coef=4.0, dice_coef=3.0)
    mf = build_model(tiny("maskformer"), LABELS, knobs)
    assert (mf.model.config.no_object_weight, mf.model.config.cross_entropy_weight) == (0.3, 2.5)
    assert mf.model.weight_dict == {"loss_cross_entropy": 2.5, "loss_mask": 4.0, "loss_dice": 3.0}
    assert mf.model.criterion.empty_weight[-1].item() == pytest.approx(0.3)
    m2f = build_model(tiny("mask2former"), LABELS, knobs)
    assert m2f.model.config.class_weight == 2.5 and m2f.model.criterion.empty_weight[-1].item() == pytest.approx(0.3)


def test_switches_freeze_checkpointing_channels_last() -> None:
    model = build_model(tiny("segformer", freeze_backbone=True, gradient_checkpointing=True,
                             channels_last=True), LABELS)
    backbone, new = model.param_groups()
    assert backbone == [] and new
    images, labels = learnable_batch()
    loss_of(model, images, labels).backward()
    assert all(p.grad is None for p in model.backbone().parameters())
    frozen_vit = build_model(tiny("vit", "linear", freeze_backbone=True), LABELS)
    assert frozen_vit.param_groups()[0] == []


def test_unknown_family_and_size_list_the_choices() -> None:
    with pytest.raises(ModelError, match="segformer, maskformer, mask2former, vit"):
        build_model(ModelConfig(family="unet", size="tiny"), LABELS)
    with pytest.raises(ModelError, match="b0, b1"):
        build_model(ModelConfig(family="segformer", size="huge"), LABELS)
    with pytest.raises(ModelError, match="exactly one"):
        build_model(ModelConfig(family="segformer"), LABELS)


def test_missing_checkpoint_keeps_the_hub_message() -> None:
    with pytest.raises(ModelError, match="facebook/no-such-model") as err:
        build_model(ModelConfig(family="maskformer", checkpoint="facebook/no-such-model"), LABELS)
    assert "The Hub said:" in str(err.value) and "model.size" in str(err.value)
    with pytest.raises(ModelError, match="does not exist"):
        build_model(ModelConfig(family="segformer", checkpoint="./no/such/folder"), LABELS)


def test_checkpoint_of_another_family_names_its_family(tmp_path: Path) -> None:
    build_model(tiny("segformer"), LABELS).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="'segformer'.*model.family: segformer"):
        build_model(ModelConfig(family="maskformer", checkpoint=str(tmp_path)), LABELS)


def test_vit_refuses_sizes_off_the_patch_grid() -> None:
    model = build_model(tiny("vit", "linear"), LABELS)
    with pytest.raises(ModelError, match="8-px patches.*56x56 or 64x64"):
        model(torch.randn(1, 3, 60, 60))


@pytest.mark.parametrize("family", ["segformer", "maskformer", "vit"])
def test_checkpoint_head_is_replaced_for_other_classes(family: str, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A saved folder stands in for a Hub id: a bigger label set gets a bigger head, a label set of
    the same size but other classes gets a fresh head, the same classes keep it; the backbone loads."""
    torch.manual_seed(0)
    source = build_model(tiny(family, "linear"), LABELS)
    source.save_pretrained(tmp_path)
    ckpt = ModelConfig(family=family, checkpoint=str(tmp_path), head="linear")

    five = LabelSet(names=("background", "car", "person", "bike", "sign"), background=0)
    bigger = build_model(ckpt, five)
    assert bigger(torch.randn(1, 3, 64, 64)).scores.shape[1] == 5

    other = LabelSet(names=("background", "tree", "road"), background=0)
    with caplog.at_level(logging.INFO, logger="segkit.models"):
        renamed = build_model(ckpt, other)
    head = classifier_weight(renamed)
    assert not torch.equal(head, classifier_weight(source))
    assert renamed.labels == other and renamed.image_processor() is not None
    for a, b in zip(source.backbone().state_dict().values(), renamed.backbone().state_dict().values()):
        assert torch.equal(a, b)
    if family != "vit":
        assert "re-initialised" in caplog.text

    same = build_model(ckpt, LABELS)
    assert torch.equal(classifier_weight(same), classifier_weight(source))


def classifier_weight(model) -> torch.Tensor:
    for name in ("model.decode_head.classifier.weight", "model.class_predictor.weight", "head.classifier.weight"):
        try:
            return model.get_parameter(name).detach().clone()
        except AttributeError:
            continue
    raise AssertionError("no classifier found")


def test_vit_builds_from_a_plain_encoder_checkpoint(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    encoder = AutoModel.from_config(AutoConfig.for_model("dinov2", hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=2, patch_size=14, image_size=56))
    encoder.save_pretrained(tmp_path)
    model = build_model(ModelConfig(family="vit", checkpoint=str(tmp_path), head="multilevel"), LABELS)
    assert model.size_divisor == 14 and model.encoder.config._attn_implementation == "sdpa"
    loaded = model.encoder.state_dict()
    assert set(encoder.state_dict()) == set(loaded)
    assert all(torch.equal(v, loaded[k]) for k, v in encoder.state_dict().items())  # reached UperNet unchanged
    # UperNet returns its logits at the input size, as pipeline() post-processes them
    assert model(torch.randn(1, 3, 70, 84)).scores.shape == (1, 3, 70, 84)
    with pytest.raises(ModelError, match="DINOv2 uses 14-px patches.*224, 238, 252"):
        model(torch.randn(1, 3, 64, 64))


def test_load_model_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["ade20k-5class-maskformer-swin-base", "sidewalk-4class-maskformer-swin-base",
                                  "sidewalk-segformer-b0", "ade20k-5class-dinov2-small",
                                  "camvid-4class-segformer", "camvid-4class-maskformer-swin-tiny"])
def test_model_recipes_load(name: str) -> None:
    path = RECIPES / f"{name}.yaml"
    assert path.read_text().startswith(f"# segkit train recipes/{name}.yaml")
    recipe = load_recipe(path)
    assert recipe.model.family in FAMILIES
    if recipe.model.family == "vit":
        crop = recipe.augment.crop_size
        assert all(side % 14 == 0 for side in (crop if isinstance(crop, list) else [crop]))


def test_vit_checkpoint_becomes_a_dinov2_backbone_with_the_same_features(tmp_path: Path) -> None:
    """transformers has no ViT backbone: a google/vit-* encoder is mapped onto Dinov2Backbone (layer
    scale 1), and UperNet's last feature map is ViT's last hidden state, token for token."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                             patch_size=16, image_size=64), add_pooling_layer=False).eval()
    vit.save_pretrained(tmp_path)
    model = build_model(ModelConfig(family="vit", checkpoint=str(tmp_path), head="multilevel"), LABELS).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        tokens = vit(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        last = model.encoder(x).feature_maps[-1].flatten(2).transpose(1, 2)
    torch.testing.assert_close(last, tokens, rtol=1e-5, atol=1e-5)
