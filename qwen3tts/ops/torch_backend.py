"""The torch backend: every op in plain torch calls, on any device and dtype. It ends every
chain (it never declines), so it is what runs where no faster backend applies."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import reference

NAME = "torch"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return True


def linear(plan, owner, x, w, bias):
    return F.linear(x, w, bias)


def gemm(plan, owner, x, w, bias):
    """x (M, K) @ w (N, K)^T (+ bias): MKL's GEMM on CPU."""
    return torch.addmm(bias, x, w.T) if bias is not None else x @ w.T


def conv1d(plan, owner, x, w, bias, stride, dilation, groups, cl):
    """A valid convolution. A channels-last layer
    (`cl`, its weight kept as (Cout, k, Cin) in memory) runs it as a 2-D convolution over
    (B, C, 1, L): oneDNN's channels-last kernels run the codec's long, few-channel convolutions
    ~2x faster than its NCW conv1d path."""
    if cl:
        return F.conv2d(x.unsqueeze(2), w.unsqueeze(2), bias, (1, stride), 0, (1, dilation), groups).squeeze(2)
    return F.conv1d(x, w, bias, stride, 0, dilation, groups)


def snake(plan, x, alpha, inv_beta):
    s = torch.sin(x * alpha[None, :, None])
    return torch.addcmul(x, s.mul_(s), inv_beta[None, :, None])  # x + inv_beta * sin^2: 4 passes over x instead of 5


def attention(plan, q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=enable_gqa)


OPS = {
    "linear": linear,
    "gemm": gemm,
    "conv1d": conv1d,
    "snake": snake,
    "rms_norm": lambda plan, x, w, eps: reference.rms_norm(x, w, eps),
    "rope": lambda plan, x, cos, sin: reference.apply_rope(x, cos, sin),
    "attention": attention,
}
MODULES = ("w8a8_linear", "decoder_stack_step")  # quant.W8A8Linear (torch's fbgemm kernels), the Python layers
