"""Triton rotate-half RoPE: one program per (row of B*H*T), positions' cos/sin gathered per
token. Same rounding points as `reference.apply_rope` (`x*cos` and `rotate_half(x)*sin` are each
rounded to the activation dtype, then added), so bf16 matches the reference up to the
interpreter's rounding mode. Output is a new tensor; `inplace=True` writes into `x`."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_kernel(X, COS, SIN, Y, T, HT, stride_x, stride_c, stride_y, HALF: tl.constexpr, BLOCK: tl.constexpr,
                 PER_BATCH: tl.constexpr):
    row = tl.program_id(0)
    t = row % T
    if PER_BATCH:  # cos/sin rows (B, T): batch b = row // (H * T)
        t = (row // HT) * T + t
    i = tl.arange(0, BLOCK)
    m = i < HALF
    x1 = tl.load(X + row * stride_x + i, mask=m, other=0.0)
    x2 = tl.load(X + row * stride_x + HALF + i, mask=m, other=0.0)
    c1 = tl.load(COS + t * stride_c + i, mask=m, other=0.0)
    c2 = tl.load(COS + t * stride_c + HALF + i, mask=m, other=0.0)
    s1 = tl.load(SIN + t * stride_c + i, mask=m, other=0.0)
    s2 = tl.load(SIN + t * stride_c + HALF + i, mask=m, other=0.0)
    dt = X.dtype.element_ty
    a1 = (x1.to(tl.float32) * c1.to(tl.float32)).to(dt)
    b1 = (-x2.to(tl.float32) * s1.to(tl.float32)).to(dt)
    a2 = (x2.to(tl.float32) * c2.to(tl.float32)).to(dt)
    b2 = (x1.to(tl.float32) * s2.to(tl.float32)).to(dt)
    tl.store(Y + row * stride_y + i, (a1.to(tl.float32) + b1.to(tl.float32)).to(dt), mask=m)
    tl.store(Y + row * stride_y + HALF + i, (a2.to(tl.float32) + b2.to(tl.float32)).to(dt), mask=m)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x (B, H, T, D); cos/sin (T, D) shared by the batch (or broadcastable with leading 1s), or
    (B, 1, T, D): one row per batch entry and position (batched decode, per-session positions)."""
    B, H, T, D = x.shape
    xc = x if x.is_contiguous() else x.contiguous()
    cos2 = cos.reshape(-1, D).contiguous()
    sin2 = sin.reshape(-1, D).contiguous()
    per_batch = cos2.shape[0] == B * T and B > 1 and cos.dim() == 4 and cos.shape[0] == B
    if cos2.shape[0] != T and not per_batch:
        raise ValueError(f"cos/sin must have one row per position ({T}) or per (batch, position) ({B}x{T}), got {cos2.shape[0]}")
    y = xc if inplace and xc is x else torch.empty_like(xc)
    rows = B * H * T
    _rope_kernel[(rows,)](xc, cos2, sin2, y, T, H * T, D, D, D, HALF=D // 2, BLOCK=triton.next_power_of_2(D // 2),
                          PER_BATCH=per_batch, num_warps=1)
    return y
