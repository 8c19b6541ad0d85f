"""Swin's padding written without Python branches on the shape, so one ONNX graph holds at any size.

transformers' Swin pads inside the model: the pixels to its patch, each stage to its window, odd
maps before patch merging, and crops back after the window attention. Each step sits behind an
`if` on the input's size (`if width % patch != 0`, `if pad_right > 0 ...`), and both exporters
keep only the branch the traced size took: a graph traced on Swin's 32-px grid has no padding and
no crop in its first stages, and fails in onnxruntime with a reshape error at any other size.

Padding by zero and cropping to the full size are no-ops, so doing them always gives the very
numbers of the PyTorch model at every size, with the amounts computed from the input's shape
inside the graph. That is why this replays transformers' own padding, instead of padding the
input to a larger multiple: Swin's zero padding enters its window attention (it is not masked),
so extra padding would change the scores PyTorch gives on the same image.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# transformers' layer forward reads pad_values[3] and [5] only to decide whether to crop: saying
# "padded" always puts the crop, a no-op when nothing was padded, into the graph.
_ALWAYS_CROP = 1


def _up_to(n: int, m: int) -> int:
    """How far n is from the next multiple of m, written as `ceil(n/m)*m - n` so that the
    exporter's shape reasoning knows the padded size divides by m (`(m - n % m) % m` is the
    same number, but then the window reshape and merging's row::2 / col::2 halves cannot be
    proven exact, and the export fails)."""
    return (n + m - 1) // m * m - n


def _pad_pixels(self: nn.Module, pixel_values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    ph, pw = self.patch_size
    return F.pad(pixel_values, (0, _up_to(width, pw), 0, _up_to(height, ph)))


def _pad_to_window(self: nn.Module, hidden: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, tuple]:
    w = self.window_size
    hidden = F.pad(hidden, (0, 0, 0, _up_to(width, w), 0, _up_to(height, w)))
    return hidden, (0, 0, 0, _ALWAYS_CROP, 0, _ALWAYS_CROP)


def _pad_to_even(self: nn.Module, feature: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.pad(feature, (0, 0, 0, _up_to(width, 2), 0, _up_to(height, 2)))


def _sine_position(self: nn.Module, shape: torch.Size, device: Any, dtype: torch.dtype,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's sine position embedding, normalised by the map's height and width
    themselves: transformers divides by `y_embed[:, -1:, :]` (the same numbers), a slice whose
    length torch.export cannot prove is 1 at every size ("Eq(...) is inconsistent")."""
    if mask is not None or not self.normalize:
        return type(self).forward(self, shape, device, dtype, mask)
    batch, _, height, width = shape
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=dtype, device=device)[None, :, None].expand(batch, height, width)
    x = torch.arange(1, width + 1, dtype=dtype, device=device)[None, None, :].expand(batch, height, width)
    y, x = y / (height + eps) * self.scale, x / (width + eps) * self.scale
    n = self.num_position_features
    dim_t = torch.arange(n, dtype=torch.int64, device=device).to(dtype)
    dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)
    pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


_REPLACEMENTS = {  # (class name suffix, method) -> branch-free version
    ("SwinPatchEmbeddings", "maybe_pad"): _pad_pixels,
    ("SwinLayer", "maybe_pad"): _pad_to_window,
    ("SwinPatchMerging", "maybe_pad"): _pad_to_even,
    ("SinePositionEmbedding", "forward"): _sine_position,
}


def make_swin_exportable(model: nn.Module) -> int:
    """Replace, on `model`'s own modules (MaskFormer's and transformers' Swin, the decoders'
    position embedding), the shape-branching methods with branch-free ones; returns how many
    were replaced (0 for other families)."""
    replaced = 0
    for module in model.modules():
        name = type(module).__name__
        for (suffix, method), fn in _REPLACEMENTS.items():
            if name.endswith(suffix) and hasattr(module, method):
                setattr(module, method, types.MethodType(fn, module))
                replaced += 1
    return replaced
