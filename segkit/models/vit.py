"""A plain ViT or DINOv2 encoder with a small segmentation head (segkit's own module).

Patch tokens form a (D, H/p, W/p) map. `head: linear` is the DINOv2 linear protocol (BatchNorm
+ 1x1 conv on the last layer). `head: multilevel` takes four layers spread through the encoder,
projects each to one width, fuses them at 1/p and refines at 2/p: a compact DPT/UPerNet-style
decoder, because the deeper layers know *what* and the earlier ones still know *where*.

Saved folders follow the Hugging Face layout (config.json with `model_type: segkit-vit`, the
encoder config inside it, model.safetensors, preprocessor_config.json) and reload offline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel, SegformerImageProcessorPil

from segkit.config import InputSpec, LossConfig, ModelConfig
from segkit.labels import LabelSet
from segkit.models.base import ModelError, SegModel, SegOutput
from segkit.models.hf import read_checkpoint_config

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "facebook/dinov2-small"
ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": ("dinov2", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                            patch_size=8, image_size=64)),
    "small": ("dinov2", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                             image_size=518)),  # facebook/dinov2-small
    "base": ("dinov2", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14,
                            image_size=518)),  # facebook/dinov2-base
}
_NAMES = {"dinov2": "DINOv2", "dinov2_with_registers": "DINOv2", "vit": "ViT"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_layers(num_layers: int) -> list[int]:
    """Four layers evenly spread, last included (12 layers -> 3, 6, 9, 12); fewer if shallow."""
    return sorted({max(1, round(num_layers * k / 4)) for k in range(1, 5)})


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.bn(maps[-1]))  # (B, C, H/p, W/p)


class MultiLevelHead(nn.Module):
    def __init__(self, dim: int, levels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(dim, width, 1) for _ in range(levels))
        self.fuse = _conv_bn_relu(levels * width, width, 3)
        self.refine = _conv_bn_relu(width, width, 3)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = self.fuse(torch.cat([proj(m) for proj, m in zip(self.proj, maps)], dim=1))  # 1/p
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # 2/p
        return self.classifier(self.refine(x))  # (B, C, 2H/p, 2W/p)


def _encoder_kwargs(model_type: str) -> dict[str, Any]:
    # SDPA where the encoder has it; ViT's pooler is unused here and would get no gradients.
    return {"attn_implementation": "sdpa", **({"add_pooling_layer": False} if model_type == "vit" else {})}


def _processor(model_type: str, source: str | Path | None) -> Any:
    """SegFormer's Pil processor (resize, rescale, normalise; and it post-processes logits) with the
    encoder checkpoint's mean/std: ViT checkpoints use 0.5, DINOv2 ImageNet's."""
    mean, std = ((0.5,) * 3, (0.5,) * 3) if model_type == "vit" else (IMAGENET_MEAN, IMAGENET_STD)
    if source is not None:
        try:
            found = AutoImageProcessor.from_pretrained(str(source))
            mean, std = tuple(found.image_mean), tuple(found.image_std)
        except OSError:
            log.info("%s has no preprocessor_config.json; using the %s defaults", source, model_type)
    return SegformerImageProcessorPil(image_mean=list(mean), image_std=list(std), do_reduce_labels=False)


class ViTSeg(SegModel):
    family = "vit"
    has_own_loss = False
    default_checkpoint = DEFAULT_CHECKPOINT
    classifier_name = "head.classifier"

    def __init__(self, encoder: nn.Module, labels: LabelSet, processor: Any, head: str = "multilevel",
                 layers: list[int] | None = None, width: int | None = None, input_spec: InputSpec | None = None) -> None:
        c = encoder.config
        # Tokens are whole patches: a size that is not a multiple of the patch would silently drop
        # the border pixels, so it is refused instead.
        super().__init__(labels, processor, size_divisor=c.patch_size, min_size=c.patch_size, strict_size=True,
                         input_spec=input_spec)
        if head not in ("linear", "multilevel"):
            raise ModelError(f"model.head '{head}' is unknown for family vit. Choose one of: linear, multilevel.")
        self.encoder = encoder
        self.head_kind = head
        n = c.num_hidden_layers
        self.layers = list(layers) if layers else (default_layers(n) if head == "multilevel" else [n])
        self.width = width or min(256, c.hidden_size)
        self.num_prefix_tokens = 1 + int(getattr(c, "num_register_tokens", 0) or 0)  # CLS (+ registers)
        self.head = (LinearHead(c.hidden_size, labels.num_classes) if head == "linear" else
                     MultiLevelHead(c.hidden_size, len(self.layers), labels.num_classes, self.width))

    @property
    def arch_name(self) -> str:
        return _NAMES.get(self.encoder.config.model_type, "ViT")

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        pixel_values = self.check_input(pixel_values)
        b, _, height, width = pixel_values.shape
        p = self.size_divisor
        # DINOv2 always interpolates its position embeddings; ViT has to be asked.
        extra = {"interpolate_pos_encoding": True} if self.encoder.config.model_type == "vit" else {}
        multilevel = self.head_kind == "multilevel"
        out = self.encoder(pixel_values=pixel_values, output_hidden_states=multilevel, **extra)
        if multilevel:  # intermediate states are pre-norm; use the encoder's final norm on each
            tokens = [self.encoder.layernorm(out.hidden_states[i]) for i in self.layers]
        else:
            tokens = [out.last_hidden_state]
        maps = [t[:, self.num_prefix_tokens:].transpose(1, 2).reshape(b, -1, height // p, width // p)
                for t in tokens]  # (B, D, H/p, W/p) each
        return SegOutput(scores=self.head(maps), loss=None)

    def backbone(self) -> nn.Module:
        return self.encoder

    def save_pretrained(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        labels = SimpleNamespace()
        self.labels.write_to(labels)
        config = {
            "model_type": "segkit-vit",
            "architectures": ["segkit.models.vit.ViTSeg"],
            "segkit_family": self.family,
            "segkit_input": self.input_spec.to_dict(),
            "head": self.head_kind,
            "layers": self.layers,
            "head_width": self.width,
            "id2label": {str(i): n for i, n in labels.id2label.items()},
            "label2id": labels.label2id,
            "segkit_labels": labels.segkit_labels,
            "encoder": self.encoder.config.to_dict(),
        }
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        self._processor.save_pretrained(out)

    @classmethod
    def build(cls, cfg: ModelConfig, labels: LabelSet, loss: LossConfig, spec: InputSpec) -> "ViTSeg":
        if cfg.size:
            if cfg.size not in ENCODERS:
                raise ModelError(f"model.size '{cfg.size}' is not a vit size. Choose one of: {', '.join(ENCODERS)}.")
            model_type, settings = ENCODERS[cfg.size]
            encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **settings), **_encoder_kwargs(model_type))
            return cls(encoder, labels, _processor(model_type, None), head=cfg.head, input_spec=spec)
        config_dict = read_checkpoint_config(cfg.checkpoint, "vit", DEFAULT_CHECKPOINT)
        if config_dict.get("model_type") == "segkit-vit":
            return cls._from_segkit_folder(Path(cfg.checkpoint), cfg, labels, spec)
        model_type = config_dict["model_type"]
        encoder, info = AutoModel.from_pretrained(cfg.checkpoint, output_loading_info=True,
                                                  **_encoder_kwargs(model_type))
        if info.get("missing_keys"):
            log.info("%s: encoder weights not in the checkpoint (initialised fresh): %s",
                     cfg.checkpoint, sorted(info["missing_keys"]))
        log.info("%s: new %s head for %d classes", cfg.checkpoint, cfg.head, labels.num_classes)
        return cls(encoder, labels, _processor(model_type, cfg.checkpoint), head=cfg.head, input_spec=spec)

    @classmethod
    def _from_segkit_folder(cls, path: Path, cfg: ModelConfig, labels: LabelSet, spec: InputSpec) -> "ViTSeg":
        """Fine-tune a segkit ViT again: keep its head only for the same classes and head type."""
        saved = cls.load(path)
        keep = list(saved.labels.names) == list(labels.names) and saved.head_kind == cfg.head
        model = cls(saved.encoder, labels, saved._processor, head=cfg.head,
                    layers=saved.layers if keep else None, width=saved.width if keep else None, input_spec=spec)
        if keep:
            model.head.load_state_dict(saved.head.state_dict())
        else:
            log.info("%s: head re-initialised for the %d chosen classes", path, labels.num_classes)
        return model

    @classmethod
    def load(cls, path: str | Path, **hub: Any) -> "ViTSeg":
        config = json.loads((Path(path) / "config.json").read_text())
        enc = dict(config["encoder"])
        model_type = enc.pop("model_type")
        encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **enc), **_encoder_kwargs(model_type))
        model = cls(encoder, LabelSet.from_config(config), _processor(model_type, path),
                    head=config["head"], layers=config["layers"], width=config["head_width"],
                    input_spec=InputSpec.from_dict(config.get("segkit_input") or {}))
        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        return model
