"""Triton RMSNorm: one program per row, statistics in float32, the HF cast order
(`weight * (x_f32 * rsqrt(mean(x^2) + eps)).to(x.dtype)`), optionally fused with a residual
add (`h = x + residual` is normalised and also returned). Semantics: `reference.rms_norm`."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(X, R, W, Y, H, stride_x, stride_r, stride_y, stride_h, N, W_ROWS, eps,
                    HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)  # torch: add in fp32, round once
        tl.store(H + row * stride_h + cols, x, mask=mask)
    xf = x.to(tl.float32)
    var = tl.sum(xf * xf, axis=0) / N
    y = (xf * (1.0 / tl.sqrt(var + eps))).to(X.dtype.element_ty)
    w = tl.load(W + (row % W_ROWS) * N + cols, mask=mask, other=0.0)  # weight (W_ROWS, N): row r uses r % W_ROWS
    out = (w.to(tl.float32) * y.to(tl.float32)).to(Y.dtype.element_ty)
    tl.store(Y + row * stride_y + cols, out, mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """x (..., N); weight (N,) or (R, N) for x (..., R, N) (one weight row per trailing row).
    Returns y, or (y, x + residual) when `residual` is given."""
    shape = x.shape
    N = shape[-1]
    w_rows = 1 if weight.dim() == 1 else weight.shape[0]
    if weight.shape[-1] != N or (w_rows > 1 and (x.dim() < 2 or shape[-2] != w_rows)):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit x {tuple(shape)}")
    weight = weight.contiguous()
    x2 = x.reshape(-1, N).contiguous()
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    y = torch.empty(x2.shape, device=x.device, dtype=out_dtype)
    r2 = residual.reshape(-1, N).contiguous() if residual is not None else x2
    h = torch.empty_like(x2) if residual is not None else x2
    BLOCK = triton.next_power_of_2(N)
    _rmsnorm_kernel[(x2.shape[0],)](x2, r2, weight, y, h, x2.stride(0), r2.stride(0), y.stride(0), h.stride(0), N, w_rows, eps,
                                    HAS_RES=residual is not None, BLOCK=BLOCK, num_warps=4 if BLOCK <= 2048 else 8)
    if residual is not None:
        return y.reshape(shape), h.reshape(shape)
    return y.reshape(shape)
