"""The Winograd backend of `conv1d`: the codec decoder's wide k7 convolutions as Winograd
F(4, 7) (codec/winograd.py: the transforms in the native library, 10 / 28 of the direct
products), float32 on CPU.

It serves a convolution with k = 7, stride 1, no groups, at least `winograd.MIN_CHANNELS`
channels in and out and enough rows per channel-mix GEMM (`winograd.worth`: fewer, the
weight-bound GEMM path is faster); otherwise it declines and the chain goes on. The transformed
weight U = G w is cached on the owning layer while the weight is unchanged, with its channel
mixes packed for oneDNN where the plan's `gemm` starts with oneDNN (else `torch.bmm`, or the
whole convolution in one native call for <= 192 channels).

`conv_transpose1d`: the decoder's transposed convolutions (k <= 2 stride) as a 2-tap
correlation over their input columns by F(4, 2) (codec/winograd.py `conv_transpose`: 5 / 8
of the GEMM's products, the overlap-add inside the output transform).

In the quantized modes (`keep_int16`, asked for by codec_quant.py) a wide k7 convolution keeps
its transformed weight only, rounded to int16 per output channel of each mix (native/w8f.py
`W16Weight`; int8 would be too coarse: the output transform amplifies a weight's rounding about
ninefold); its channel mixes are the native int16 products (half the bytes of float32 for the
weight-bound mixes of a streaming push). The float weight is dropped; the layer then always
computes by F(4, 7) with these products, whose rows do not depend on each other, so a stream
and an offline decode compute the same sums.

Available where `QWEN3TTS_WINOGRAD` and the native library are on, float32 on CPU.
"""

from __future__ import annotations

import torch

from . import native_backend
from .derived import cached, stand_in, version

NAME = "winograd"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return opts.winograd and native_backend.available(opts, device, dtype)


def transformed(plan, owner, w: torch.Tensor, rows: int):
    """U (or its packed mixes) for `owner`'s weight `w`, cached on `owner` while `w` is unchanged."""
    from ..codec import winograd  # (at call time: the codec package imports the seam)

    key = (version(w), w.data_ptr())
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


W16_SLOT = "_winograd_w16"


class _Mixes:
    """The n int16 channel mixes as `winograd.conv` takes them: `len`, each mix's `shape`, and
    `mix_all(V)`: V (n, rows, Cin) -> (n, rows, Cout) in one native call (native/w8f.py W16Batch)."""

    __slots__ = ("batch", "lib")

    def __init__(self, batch, lib):
        self.batch, self.lib = batch, lib

    def __len__(self) -> int:
        return len(self.batch.weights)

    def __getitem__(self, i: int):
        return self.batch.weights[i]

    def mix_all(self, V: torch.Tensor) -> torch.Tensor:
        return self.batch(V, self.lib)


def keep_int16(plan, owner, param_owner) -> int:
    """Where `plan` has this backend and `owner` is a wide k7 convolution computed by the unfused
    F(4, 7) (channels-last, stride 1, no groups, from MIN_CHANNELS channels, more than the fused
    kernel's): keep its transformed weight as n int16 channel mixes in place of
    `param_owner.weight`, which becomes a stand-in on the meta device. Returns the weights
    converted (0 where it does not apply or is done)."""
    from ..codec import winograd  # (at call time: the codec package imports the seam)
    from ..native.w8f import W16Batch, W16Weight

    if W16_SLOT in owner.__dict__ or "winograd" not in plan.chain("conv1d") or plan.lib is None:
        return 0
    conv = param_owner
    w = conv.weight
    cout, cin, k = w.shape
    if (not getattr(owner, "cl", False) or k != 7 or conv.stride[0] != 1 or conv.groups != 1
            or min(cin, cout) < winograd.MIN_CHANNELS or winograd.fused(cin, cout, plan.lib) or w.is_meta):
        return 0
    U = winograd.transform_weight(w.detach().float())  # (n, Cin, Cout)
    owner.__dict__[W16_SLOT] = _Mixes(W16Batch([W16Weight(u.T) for u in U]), plan.lib)  # n mixes of (Cout, Cin)
    owner.__dict__.pop("_winograd", None)
    stand_in(conv)
    return w.numel()


def _conv_int16(mixes, x, bias, dilation, history, lib):
    """`conv1d` for a layer that keeps int16 transformed weights (`keep_int16`): always F(4, 7)."""
    from ..codec import winograd

    B, _, N = x.shape
    T = N + (0 if history is None else history.shape[1]) - 6 * dilation
    if T <= 0:
        return x.new_zeros(B, 0, mixes[0].shape[0]).transpose(1, 2)
    return winograd.conv(x, mixes, bias, dilation, lib, history=history)


def conv1d(plan, owner, x, w, bias, stride, dilation, groups, cl, history=None, epilogue=None):
    """Valid convolution of [history; x] (history (B, P, Cin) contiguous, or None) by F(4, 7)
    for a channels-last layer (`cl`); a channels-last (B, Cout, T) view, or None where it does
    not serve. `epilogue`: the rest of a residual unit (`winograd.conv`), served only by the
    fused kernel."""
    if not cl:
        return None
    kept = owner.__dict__.get(W16_SLOT)
    if kept is not None and epilogue is None:
        return _conv_int16(kept, x, bias, dilation, history, plan.lib)
    from ..codec import winograd  # (at call time: the codec package imports the seam)

    cout, cin, k = w.shape
    B, _, N = x.shape
    L = N + (0 if history is None else history.shape[1])
    out_len = L - (k - 1) * dilation
    if (k != 7 or stride != 1 or groups != 1 or min(cin, cout) < winograd.MIN_CHANNELS or out_len <= 0
            or x.dtype != torch.float32 or x.device.type != "cpu"
            or not winograd.worth(B, out_len, dilation, plan.lib)):
        return None
    if epilogue is not None:
        if not (winograd.fused(cin, cout, plan.lib) and cin == cout):
            return None
        res, a2, ib2, owner2, w2, b2 = epilogue
        epilogue = (res, a2, ib2, _mix_weight(owner2, w2), b2)
    U = transformed(plan, owner, w, winograd.gemm_rows(B, out_len, dilation))
    return winograd.conv(x, U, bias, dilation, plan.lib, history=history, epilogue=epilogue)


def _mix_weight(owner, w: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's weight (Cout, Cin, 1) as (Cin, Cout), contiguous: a copy cached on
    `owner` while the weight is unchanged."""
    return cached(owner, "_mix_t", w, lambda w: w.reshape(w.shape[0], w.shape[1]).T.contiguous())


def conv1d_history(plan, owner, x, history, w, bias, dilation, groups, epilogue=None):
    """A streaming step of a channels-last stride-1 layer: the valid convolution of
    [history (B, P, Cin); x], reading the history in place (no concatenation); with
    `epilogue`, the whole residual unit (see `conv1d`)."""
    return conv1d(plan, owner, x, w, bias, 1, dilation, groups, True, history=history, epilogue=epilogue)


def conv_transpose1d(plan, owner, x, w, bias, stride):
    """The output blocks of a channels-last transposed convolution (w (Cin, Cout, k), k <= 2
    stride) by F(4, 2) where it pays (`winograd.transposed_pays`), else None. The transformed
    weight is cached on `owner` (packed for oneDNN where the plan's `gemm` starts with it); a
    packed-only weight is read back from its packed copy once."""
    from ..codec import winograd  # (at call time: the codec package imports the seam)

    cin, cout, k = w.shape
    B, _, N = x.shape
    if (k > 2 * stride or min(cin, cout) < winograd.MIN_CHANNELS or x.dtype != torch.float32 or x.device.type != "cpu" or w.dtype != torch.float32
            or not winograd.transposed_pays(B, N, cin, cout, stride)):
        return None
    def build(w):
        U = winograd.transform_transposed(w, stride)
        return winograd.pack_mix(U, B * -(-(N + 1) // winograd.T_TILE)) if plan.leads("gemm") == "onednn" else U

    return winograd.conv_transpose(x, cached(owner, "_winograd_t", w, build, stride), bias, plan.lib)


OPS = {"conv1d": conv1d, "conv1d_history": conv1d_history, "conv_transpose1d": conv_transpose1d}
