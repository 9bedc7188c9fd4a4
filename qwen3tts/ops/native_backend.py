"""The native backend (the C library of qwen3tts/native, float32 CPU): the few-row float32
product (`qwen3tts_linear_f32`: 2..24 rows, a streaming step's convolution or linear, where
oneDNN is off), SnakeBeta in one fused pass (`qwen3tts_snake`, either memory layout) and the
channels-last depthwise convolution (`qwen3tts_dwconv`: the ConvNeXt blocks' k7 convolution,
offline and as a streaming step reading its history in place; torch's depthwise convolution
costs ~0.1 ms per call at a push's 2-4 rows, mostly setup), and a transposed convolution's
overlap-add with its carried tail in one pass (`qwen3tts_overlap_add`, in place of ~10 small
torch ops per call).

Available where `QWEN3TTS_NATIVE` is not off, the library builds (auto: else one warning and
the chain goes on without it) and the model is float32 on CPU.
"""

from __future__ import annotations

import torch

from ..native.f32 import few_rows_linear
from .derived import cached

NAME = "native"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32 and library(opts) is not None


def library(opts):
    """The loaded library, or None (switched off, or it does not build in auto mode)."""
    if opts.native == "off":
        return None
    from .. import native

    return native.library()


def gemm(plan, owner, x, w, bias):
    return few_rows_linear(x, w, bias, plan.lib)


def snake(plan, x, alpha, inv_beta):
    if not (x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 3):
        return None
    B, C, T = x.shape
    y = torch.empty_like(x)  # the same memory layout
    args = (x.data_ptr(), y.data_ptr(), alpha.data_ptr(), inv_beta.data_ptr())
    if x.transpose(1, 2).is_contiguous():  # channels-last: (B, C, T) over (B, T, C) memory
        plan.lib.qwen3tts_snake(*args, B * T, C, torch.get_num_threads())
        return y
    if x.is_contiguous():
        plan.lib.qwen3tts_snake_ncw(*args, B * C, C, T, torch.get_num_threads())
        return y
    return None


def _taps(owner, w: torch.Tensor) -> torch.Tensor:
    """A depthwise weight (C, 1, k) as (k, C), contiguous: a copy cached on `owner` while the
    weight is unchanged."""
    return cached(owner, "_dw_taps", w, lambda w: w.reshape(w.shape[0], w.shape[2]).T.contiguous())


def conv1d_history(plan, owner, x, history, w, bias, dilation=1, groups=1, epilogue=None):
    """A channels-last depthwise convolution (groups = Cin = Cout) of [history (B, P, C) or None;
    x (B, C, N)] (rows of C channels contiguous), in one native pass: a (B, C, T) view of (B, T, C) memory; None for any other
    layer, layout or dtype."""
    cout, cpg, k = w.shape
    B, C, N = x.shape
    xt = x.transpose(1, 2)  # (B, N, C)
    if (epilogue is not None or groups != C or cout != C or cpg != 1 or w.is_meta or x.dtype != torch.float32
            or x.device.type != "cpu" or not (_rows(xt) and (history is None or _rows(history)))
            or (bias is not None and not bias.is_contiguous())):
        return None
    P = 0 if history is None else history.shape[1]
    T = P + N - (k - 1) * dilation
    if T <= 0:
        return None
    y = torch.empty(B, T, C)
    h = history if history is not None else xt
    plan.lib.qwen3tts_dwconv(h.data_ptr(), P, h.stride(0), xt.data_ptr(), N, xt.stride(0), B, C, _taps(owner, w).data_ptr(), k, dilation,
                             None if bias is None else bias.data_ptr(), y.data_ptr(), torch.get_num_threads())
    return y.transpose(1, 2)


def _rows(t: torch.Tensor) -> bool:
    """(B, L, C) with contiguous rows of C channels (any batch stride)."""
    return t.stride(2) == 1 and (t.shape[1] <= 1 or t.stride(1) == t.shape[2])


def conv1d(plan, owner, x, w, bias, stride, dilation, groups, cl):
    if not cl or stride != 1:
        return None
    return conv1d_history(plan, owner, x, None, w, bias, dilation, groups)


def overlap_add(plan, z, tail, bias, stride):
    B, N, k, C = z.shape
    P = k - stride
    if not (z.dtype == torch.float32 and z.device.type == "cpu" and z.is_contiguous() and 0 < P <= stride
            and tail.dtype == torch.float32 and tail.shape == (B, C, P) and (bias is None or bias.is_contiguous())):
        return None
    tt = tail.transpose(1, 2)  # (B, P, C): the state's memory
    if not _rows(tt):
        return None
    y = torch.empty(B, N * stride, C)
    plan.lib.qwen3tts_overlap_add(z.data_ptr(), B, N, k, stride, C, tt.data_ptr(), tt.stride(0),
                                  None if bias is None else bias.data_ptr(), y.data_ptr(), torch.get_num_threads())
    return y.transpose(1, 2)


OPS = {"gemm": gemm, "snake": snake, "conv1d": conv1d, "conv1d_history": conv1d_history, "overlap_add": overlap_add}
MODULES = ("w8a8_linear", "decoder_stack_step")  # NativeW8A8Linear, NativeStack (native/stack.py)
