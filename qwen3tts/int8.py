"""Symmetric per-output-channel int8 weights: the helpers shared by quant.py (the torch int8
linears) and native/stack.py (the native ones), below both so neither imports the other's
module for them. Not in the official model (it has no quantization)."""

from __future__ import annotations

import torch


def channel_scales(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 scales of a float32 weight (out, in): max|w| / 127."""
    return (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)


def quantize_channels(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight round(w / scale) in +-127, float32 scales (out,)) of a float32 weight (out, in)."""
    scale = channel_scales(w)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale
