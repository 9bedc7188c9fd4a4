"""Symmetric per-output-channel int8 weights: the helpers shared by quant.py (the torch int8
linears) and native/stack.py (the native ones), below both so neither imports the other's
module for them. Not in the official model (it has no quantization)."""

from __future__ import annotations

import torch


def channel_scales(w: torch.Tensor, qmax: int = 127) -> torch.Tensor:
    """Symmetric per-output-channel scales of a float32 weight (out, in): max|w| / qmax."""
    return (w.abs().amax(dim=1) / float(qmax)).clamp(min=1e-12)


def quantize_channels(w: torch.Tensor, dtype: torch.dtype = torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer weight round(w / scale) in +-qmax, float32 scales (out,)) of a float32 weight
    (out, in): int8 (qmax 127), or int16 (qmax 32767: the codec's Winograd mixes, native/w8f.py)."""
    qmax = torch.iinfo(dtype).max
    scale = channel_scales(w, qmax)
    return torch.round(w / scale[:, None]).clamp(-qmax, qmax).to(dtype), scale
