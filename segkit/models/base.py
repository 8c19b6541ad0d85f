"""What every model family looks like to the rest of segkit: `SegModel` in, `SegOutput` out.

The trainer, evaluation, prediction and export only see this interface. Families differ inside
(`segformer.py`, `maskformer.py`, `vit.py`); the Hugging Face checkpoint plumbing they share is in
`hf.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit.config.sections import InputSpec
from segkit.infer.segment import Job, segment
from segkit.infer.sliding import Windows
from segkit.labels import LabelSet


class ModelError(ValueError):
    """A model that cannot be built or run as asked. The message says how to fix it."""


@dataclass
class SegOutput:
    scores: torch.Tensor | None
    """(B, C, h, w) class scores at the model's native resolution: logits (segformer, vit) or
    per-pixel class probabilities (maskformer, mask2former). None while a family that trains on
    its own loss is given labels: the scores would only cost time then."""
    loss: torch.Tensor | None = None
    """The family's own loss (maskformer/mask2former when labels are given); None otherwise."""


class SegModel(nn.Module):
    """A segmentation model for one `LabelSet`, whatever the family underneath."""

    family: str = ""
    default_checkpoint: str = ""
    """The Hub id recipes use by default; also the example in error messages."""
    has_own_loss: bool = False
    """Each family sets it from `segkit.models.registry`. True when `forward(x, labels)` returns the loss to train on (the set-prediction losses of
    MaskFormer/Mask2Former). Otherwise the trainer applies segkit's pixel loss to `scores`."""
    classifier_name: str = ""
    """Dotted path of the final classifier (a Linear or 1x1 Conv with one row per class, plus
    MaskFormer's "no object" row): what head initialisation rebuilds for a new label set."""
    never_used: tuple[str, ...] = ()
    """Endings of parameter names that no forward pass uses (DINOv2's `embeddings.mask_token`,
    the Swin backbones' final layernorm). `freeze_never_used` freezes them: under several processes
    DDP waits for a gradient of every trainable parameter and fails at the second step otherwise,
    and `find_unused_parameters` would walk the autograd graph on every step instead."""

    def __init__(self, labels: LabelSet, processor: Any, size_divisor: int, min_size: int,
                 strict_size: bool = False, input_spec: InputSpec | None = None) -> None:
        super().__init__()
        self.labels = labels
        self._processor = processor
        self.image_mean: tuple[float, float, float] = tuple(float(v) for v in processor.image_mean)
        self.image_std: tuple[float, float, float] = tuple(float(v) for v in processor.image_std)
        self.size_divisor = size_divisor
        """Input H and W should be multiples of this; `pad` input mode pads to it."""
        self.min_size = min_size
        """Smallest input side the backbone takes (SegFormer's first reduction conv needs 32)."""
        self.strict_size = strict_size
        """True when inputs that are not multiples of `size_divisor` are refused (ViT patches)."""
        self.channels_last = False
        self.carried_head: Any = None
        """The checkpoint's classifier for other classes (models/head_init.py), until training
        builds the new head from it; None otherwise."""
        self.head_note: str | None = None
        """For the banner, when the checkpoint had no pixel classifier to carry (an image
        classifier such as nvidia/mit-b0's, or no head at all): what became of its head."""
        self.set_input_spec(input_spec or InputSpec("none"))

    # -- what each family provides -------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        raise NotImplementedError

    def backbone(self) -> nn.Module:
        """The pretrained encoder: frozen by `freeze_backbone`, trained at the backbone LR."""
        raise NotImplementedError

    def save_pretrained(self, out_dir: str | Path) -> None:
        raise NotImplementedError

    def enable_gradient_checkpointing(self) -> bool:
        """Turn on activation checkpointing; return False where the model has none."""
        return False

    # -- shared behaviour ----------------------------------------------------------------------
    def set_input_spec(self, spec: InputSpec) -> None:
        """Feed images as `spec` says outside training, and write that into the image processor
        saved with the model, so `pipeline` and `segkit predict` feed them the same way."""
        self.input_spec = spec
        self._processor.do_resize = spec.mode == "resize"
        if spec.size:
            self._processor.size = {"height": spec.size[0], "width": spec.size[1]}
        if hasattr(self._processor, "do_center_crop"):
            self._processor.do_center_crop = False  # a centre crop would cut the image away from its mask

    @property
    def pads_input(self) -> bool:
        """Whether inference pads inputs to `size_divisor` (and crops the scores back)."""
        return self.input_spec.mode == "pad" or self.strict_size

    def image_processor(self) -> Any:
        """The Pil image processor saved next to the weights, set to feed images as evaluated."""
        return self._processor

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained backbone params, new head/decoder params), trainable ones only.

        Two groups because fine-tuning wants a smaller LR on the pretrained encoder than on the
        freshly initialised head (`train.backbone_lr_scale`).
        """
        in_backbone = {id(p) for p in self.backbone().parameters()}
        backbone, head = [], []
        for p in self.parameters():
            if p.requires_grad:
                (backbone if id(p) in in_backbone else head).append(p)
        return backbone, head

    def train_targets(self) -> Any:
        """A picklable `labels (H, W) uint8 -> targets` builder that the training collate runs on
        the CPU, for families that train on something other than the label map; None otherwise.
        Its outputs reach `forward` as keyword arguments (MaskFormer's `mask_labels`, `class_labels`)."""
        return None

    def freeze_never_used(self) -> list[str]:
        """Freeze the parameters named by `never_used`; returns their names."""
        names = [n for n, p in self.named_parameters() if n.endswith(self.never_used) and p.requires_grad]
        for n in names:
            self.get_parameter(n).requires_grad_(False)
        return names

    def freeze_backbone(self) -> None:
        for p in self.backbone().parameters():
            p.requires_grad_(False)

    def check_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Refuse input sizes the backbone cannot take, with the sizes that work."""
        if pixel_values.ndim != 4:
            raise ModelError(f"pixel_values must be (B, 3, H, W); got shape {tuple(pixel_values.shape)}")
        h, w = pixel_values.shape[-2:]
        if min(h, w) < self.min_size:
            raise ModelError(f"{self.family} needs inputs of at least {self.min_size}x{self.min_size} "
                             f"pixels; got {h}x{w}. Increase augment.crop_size / augment.eval_size.")
        d = self.size_divisor
        if self.strict_size and (h % d or w % d):
            near = " or ".join(dict.fromkeys(f"{h2}x{w2}" for h2, w2 in (
                (max(d, h // d * d), max(d, w // d * d)), (-(-h // d) * d, -(-w // d) * d))))
            raise ModelError(f"{self.size_message()} Got {h}x{w}; crop or pad to {near}.")
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    @property
    def arch_name(self) -> str:
        """Name used in messages (the family, or the encoder where that is clearer)."""
        return self.family

    def size_message(self) -> str:
        d = self.size_divisor
        first = max(1, 224 // d)
        examples = ", ".join(str(d * k) for k in range(first, first + 3))
        return (f"{self.arch_name} uses {d}-px patches, so input height and width must be multiples "
                f"of {d}: use {examples}, ... or set augment.crop_size (and eval_size) to a multiple of {d}.")

    @torch.inference_mode()
    def predict(self, pixel_values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, H, W) int64 class ids for already preprocessed inputs, through the one dispatch
        (`segkit.infer.segment`): the argmax of the scores brought to `size`. Preprocessed inputs
        carry no original image, so nothing slides here."""
        was_training = self.training
        self.eval()
        try:
            maps: list[torch.Tensor | None] = [None] * len(pixel_values)
            for i, mask in segment(self, [Job(size, x) for x in pixel_values], windows=Windows("never")):
                maps[i] = mask.long()
        finally:
            self.train(was_training)
        return torch.stack(maps)  # type: ignore[arg-type]
