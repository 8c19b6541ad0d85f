"""SegFormer: a Mix Transformer (MiT) encoder and an all-MLP decoder that predicts logits at 1/4.

segkit does not use the model's built-in loss (plain cross-entropy on upsampled logits): the
trainer applies segkit's configurable pixel loss to `scores`, so `has_own_loss` is False.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil

from segkit.config.sections import InputSpec, LossConfig, ModelConfig
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegOutput
from segkit.models.hf import HFSegModel, head_note, load_for_labels, load_processor, read_checkpoint_config
from segkit.models.outputs import to_scores
from segkit.models.registry import FAMILIES

# MiT encoders as in the SegFormer paper (Table 6) and the nvidia/mit-b* configs. All sizes share
# sr_ratios [8, 4, 2, 1], patch sizes [7, 3, 3, 3], strides [4, 2, 2, 2] and MLP ratio 4 (the
# transformers defaults). `tiny` (~0.46 M params) exists for tests and the offline quickstart.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 4],
                 decoder_hidden_size=64),
    "b0": dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=256),
    "b1": dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=256),
    "b2": dict(depths=[3, 4, 6, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=768),
    "b3": dict(depths=[3, 4, 18, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=768),
    "b4": dict(depths=[3, 8, 27, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=768),
    "b5": dict(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=768),
}

DEFAULT_CHECKPOINT = FAMILIES["segformer"].default_checkpoint

# Inputs of any size >= 32 run (the patch embeddings pad); 32 keeps every stage's map whole, so
# eval padding uses it.
SIZE_RULES = dict(size_divisor=32, min_size=32)


def _processor(source: str | Path | None) -> Any:
    # do_reduce_labels must stay off: segkit's labels are already 0..C-1 with 255 ignored, and
    # ADE checkpoints ship with it on (it would shift every class by one).
    return load_processor(SegformerImageProcessorPil, source, do_reduce_labels=False)


class SegformerSeg(HFSegModel):
    family = "segformer"
    has_own_loss = FAMILIES["segformer"].has_own_loss
    default_checkpoint = DEFAULT_CHECKPOINT
    classifier_name = "model.decode_head.classifier"

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        pixel_values = self.check_input(pixel_values)
        out = self.model(pixel_values=pixel_values)  # no labels: segkit's loss is applied outside
        return SegOutput(scores=to_scores(out), loss=None)

    def backbone(self) -> nn.Module:
        return self.model.segformer

    @classmethod
    def build(cls, cfg: ModelConfig, labels: LabelSet, loss: LossConfig, spec: InputSpec) -> "SegformerSeg":
        if cfg.size:
            if cfg.size not in SIZES:
                raise ModelError(f"model.size '{cfg.size}' is not a segformer size. Choose one of: "
                                 f"{', '.join(SIZES)}.")
            model = SegformerForSemanticSegmentation(SegformerConfig(**SIZES[cfg.size], num_labels=labels.num_classes))
            return cls(model, labels, _processor(None), spec, **SIZE_RULES)
        config_dict = read_checkpoint_config(cfg.checkpoint, "segformer", DEFAULT_CHECKPOINT)
        # mit-b* are encoder-only (ImageNet) checkpoints: the whole decode head starts fresh.
        model, carried = load_for_labels(SegformerForSemanticSegmentation, cfg.checkpoint, config_dict, labels,
                                         classifier="decode_head.classifier", carry=cfg.head_init == "checkpoint")
        seg = cls(model, labels, _processor(cfg.checkpoint), spec, **SIZE_RULES)
        seg.carried_head = carried
        seg.head_note = head_note(config_dict, SegformerForSemanticSegmentation, cfg.checkpoint)
        return seg

    @classmethod
    def load(cls, path: str | Path, **hub: Any) -> "SegformerSeg":
        model = SegformerForSemanticSegmentation.from_pretrained(path, **hub)
        processor = _processor(path)
        return cls(model, LabelSet.from_config(model.config), processor,
                   cls.saved_input_spec(model.config, processor), **SIZE_RULES)
