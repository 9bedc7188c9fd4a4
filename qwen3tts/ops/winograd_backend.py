"""The Winograd backend of `conv1d`: the codec decoder's wide k7 convolutions as Winograd
F(4, 7) (codec/winograd.py: the transforms in the native library, 10 / 28 of the direct
products), float32 on CPU.

It serves a convolution with k = 7, stride 1, no groups, at least `winograd.MIN_CHANNELS`
channels in and out and enough rows per channel-mix GEMM (`winograd.worth`: fewer, the
weight-bound GEMM path is faster); otherwise it declines and the chain goes on. The transformed
weight U = G w is cached on the owning layer while the weight is unchanged, with its channel
mixes packed for oneDNN where the plan's `gemm` starts with oneDNN (else `torch.bmm`, or the
whole convolution in one native call for <= 192 channels).

Available where `QWEN3TTS_WINOGRAD` and the native library are on, float32 on CPU.
"""

from __future__ import annotations

import torch

from . import native_backend

NAME = "winograd"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return opts.winograd and native_backend.available(opts, device, dtype)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return -1


def transformed(plan, owner, w: torch.Tensor, rows: int):
    """U (or its packed mixes) for `owner`'s weight `w`, cached on `owner` while `w` is unchanged."""
    from ..codec import winograd  # (at call time: the codec package imports the seam)

    key = (_version(w), w.data_ptr())
    c = owner.__dict__.get("_winograd")
    if c is None or c[0] != key:
        c = (key, None, None)
    cout, cin = w.shape[:2]
    if plan.leads("gemm") != "onednn" or winograd.fused(cin, cout, plan.lib):
        if c[1] is None:
            owner.__dict__["_winograd"] = c = (key, winograd.transform_weight(w.detach()), c[2])
        return c[1]  # U itself: the fused native kernel (few channels) or torch.bmm
    if c[2] is None:  # the packed mixes replace U: only what computes is kept
        U = c[1] if c[1] is not None else winograd.transform_weight(w.detach())
        owner.__dict__["_winograd"] = c = (key, None, winograd.pack_mix(U, rows))
    return c[2]


def conv1d(plan, owner, x, w, bias, stride, dilation, groups, cl, history=None):
    """Valid convolution of [history; x] (history (B, P, Cin) contiguous, or None) by F(4, 7)
    for a channels-last layer (`cl`); a channels-last (B, Cout, T) view, or None where it does
    not serve."""
    if not cl:
        return None
    from ..codec import winograd  # (at call time: the codec package imports the seam)

    cout, cin, k = w.shape
    B, _, N = x.shape
    L = N + (0 if history is None else history.shape[1])
    out_len = L - (k - 1) * dilation
    if (k != 7 or stride != 1 or groups != 1 or min(cin, cout) < winograd.MIN_CHANNELS or out_len <= 0
            or x.dtype != torch.float32 or x.device.type != "cpu"
            or not winograd.worth(B, out_len, dilation, plan.lib)):
        return None
    U = transformed(plan, owner, w, winograd.gemm_rows(B, out_len, dilation))
    return winograd.conv(x, U, bias, dilation, plan.lib, history=history)


def conv1d_history(plan, owner, x, history, w, bias, dilation, groups):
    """A streaming step of a channels-last stride-1 layer: the valid convolution of
    [history (B, P, Cin); x], reading the history in place (no concatenation)."""
    return conv1d(plan, owner, x, w, bias, 1, dilation, groups, True, history=history)


OPS = {"conv1d": conv1d, "conv1d_history": conv1d_history}
