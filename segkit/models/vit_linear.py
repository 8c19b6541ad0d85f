"""The DINOv2 linear protocol as a segmentation model: BatchNorm + a 1x1 conv on the last layer's
patch tokens (the `vit` family with `head: linear`).

It is segkit's own module: no transformers architecture is a linear head on patch tokens, so its
saved folder (config.json with `model_type: segkit-vit` and the encoder config inside, weights,
image processor) reloads with segkit, not with `pipeline`. The multilevel head (UperNet, vit.py)
is the one to publish.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, SegformerImageProcessorPil

from segkit.config.sections import InputSpec
from segkit.labels import LabelSet
from segkit.models.base import SegModel, SegOutput
from segkit.models.registry import FAMILIES

log = logging.getLogger("segkit.models")
_NAMES = {"dinov2": "DINOv2", "dinov2_with_registers": "DINOv2", "vit": "ViT"}


def _encoder_kwargs(model_type: str) -> dict[str, Any]:
    # SDPA where the encoder has it; ViT's pooler is unused here and would get no gradients.
    return {"attn_implementation": "sdpa", **({"add_pooling_layer": False} if model_type == "vit" else {})}


def encoder_from_config(config: Any) -> nn.Module:
    return AutoModel.from_config(config, **_encoder_kwargs(config.model_type))


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn(tokens))  # (B, C, H/p, W/p)


class ViTLinearSeg(SegModel):
    family = "vit"
    has_own_loss = FAMILIES["vit"].has_own_loss
    classifier_name = "head.classifier"
    never_used = ("embeddings.mask_token",)  # DINOv2 masks patches only for its own pretraining

    def __init__(self, encoder: nn.Module, labels: LabelSet, processor: Any, input_spec: InputSpec | None = None) -> None:
        c = encoder.config
        # Tokens are whole patches: a side off the patch grid would silently lose its border
        # pixels, so training refuses it and inference pads (segkit.infer.scores).
        super().__init__(labels, processor, size_divisor=c.patch_size, min_size=c.patch_size, strict_size=True,
                         input_spec=input_spec)
        self.encoder = encoder
        self.num_prefix_tokens = 1 + int(getattr(c, "num_register_tokens", 0) or 0)  # CLS (+ registers)
        self.head = LinearHead(c.hidden_size, labels.num_classes)

    @property
    def arch_name(self) -> str:
        return _NAMES.get(self.encoder.config.model_type, "ViT")

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        pixel_values = self.check_input(pixel_values)
        b, _, height, width = pixel_values.shape
        p = self.size_divisor
        # DINOv2 always interpolates its position embeddings; ViT has to be asked.
        extra = {"interpolate_pos_encoding": True} if self.encoder.config.model_type == "vit" else {}
        tokens = self.encoder(pixel_values=pixel_values, **extra).last_hidden_state
        grid = tokens[:, self.num_prefix_tokens:].transpose(1, 2).reshape(b, -1, height // p, width // p)
        return SegOutput(scores=self.head(grid))

    def backbone(self) -> nn.Module:
        return self.encoder

    def for_labels(self, labels: LabelSet, spec: InputSpec) -> "ViTLinearSeg":
        """The same encoder with a head for `labels`: kept for the same classes, new otherwise."""
        model = ViTLinearSeg(self.encoder, labels, self._processor, spec)
        if labels.names == self.labels.names:
            model.head.load_state_dict(self.head.state_dict())
        else:
            log.info("linear head re-initialised for the %d chosen classes", labels.num_classes)
        return model

    def save_pretrained(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        labels = SimpleNamespace()
        self.labels.write_to(labels)
        config = {"model_type": "segkit-vit", "architectures": ["segkit.models.vit_linear.ViTLinearSeg"],
                  "segkit_family": self.family, "segkit_input": self.input_spec.to_dict(), "head": "linear",
                  "id2label": {str(i): n for i, n in labels.id2label.items()}, "label2id": labels.label2id,
                  "segkit_labels": labels.segkit_labels, "encoder": self.encoder.config.to_dict()}
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        self._processor.save_pretrained(out)

    @classmethod
    def from_encoder_checkpoint(cls, checkpoint: str, model_type: str, labels: LabelSet, processor: Any,
                                spec: InputSpec) -> "ViTLinearSeg":
        encoder, info = AutoModel.from_pretrained(checkpoint, output_loading_info=True, **_encoder_kwargs(model_type))
        if info.get("missing_keys"):
            log.info("%s: encoder weights not in the checkpoint (initialised fresh): %s",
                     checkpoint, sorted(info["missing_keys"]))
        log.info("%s: new linear head for %d classes", checkpoint, labels.num_classes)
        return cls(encoder, labels, processor, spec)

    @classmethod
    def load(cls, path: str | Path) -> "ViTLinearSeg":
        config = json.loads((Path(path) / "config.json").read_text())
        enc = dict(config["encoder"])
        model_type = enc.pop("model_type")
        encoder = encoder_from_config(AutoConfig.for_model(model_type, **enc))
        model = cls(encoder, LabelSet.from_config(config), SegformerImageProcessorPil.from_pretrained(str(path)),
                    InputSpec.from_dict(config.get("segkit_input") or {}))
        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        return model
