"""Torch reference kernels: they define the semantics (Hugging Face cast order) and are the
CPU path and the test oracle for the Triton kernels.

* `rms_norm`: `weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(x.dtype)` — HF `Qwen3RMSNorm`
  (normalise in float32, cast back, then multiply by the weight).
* `rope_tables` / `apply_rope`: rotate-half ("NeoX") RoPE, `inv_freq = 1/theta^(2i/d)` in
  float32, `emb = cat(freqs, freqs)`, cos/sin cast to the activation dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., N); weight (N,) or (R, N) broadcast over x's trailing (R, N) (per-head weights of
    heads normalised together, e.g. the q and k heads of one projection)."""
    dtype = x.dtype
    if dtype == torch.float32:  # the same formula as one fused op (fewer dispatches on the hot path)
        return weight * F.rms_norm(x, (x.shape[-1],), None, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape positions.shape + (head_dim,), computed in float32, cast to `dtype`."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (..., head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (..., head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin broadcastable to (B, 1, T, D)."""
    return (x * cos) + (rotate_half(x) * sin)
