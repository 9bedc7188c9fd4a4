"""The torch semantics of every op of the seam: the definition each backend must match, and
the oracle of tests/test_ops.py.

Each function mirrors what the official model computes at that point (transformers / qwen_tts
modules: `nn.Linear`, `nn.Conv1d` after the causal padding, `nn.ConvTranspose1d`, `SnakeBeta`,
`Qwen3RMSNorm`, `apply_rotary_pos_emb`, `scaled_dot_product_attention`), written plainly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels.reference import apply_rope, rms_norm, rope_tables  # noqa: F401 (the RMSNorm / RoPE definitions)


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ w (N, K)^T (+ bias (N,)): (..., N)."""
    y = x @ w.T
    return y if bias is None else y + bias


def conv1d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """Valid (unpadded) convolution of x (B, Cin, L) with w (Cout, Cin / groups, k): the causal
    convolution once its padding is applied."""
    return F.conv1d(x, w, bias, stride=stride, dilation=dilation, groups=groups)


def conv_transpose1d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Transposed convolution of x (B, Cin, N) with w (Cin, Cout, k): (B, Cout, (N - 1) s + k)."""
    return F.conv_transpose1d(x, w, bias, stride=stride)


def snake(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta with its constants precomputed: x + inv_beta * sin(x * alpha)^2 over (B, C, T),
    alpha = exp(log alpha), inv_beta = 1 / (exp(log beta) + 1e-9), both (C,)."""
    return x + inv_beta[None, :, None] * torch.sin(x * alpha[None, :, None]) ** 2


def attention(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + mask) v over (B, H, T, D) / (B, Hkv, S, D); `enable_gqa`
    repeats each key / value head for H / Hkv query heads; `attn_mask` is boolean (True:
    attend) or additive."""
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        r = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(r, dim=-3), v.repeat_interleave(r, dim=-3)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if is_causal:
        T, S = q.shape[-2], k.shape[-2]
        s = s.masked_fill(~torch.ones(T, S, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    return torch.softmax(s, dim=-1) @ v
