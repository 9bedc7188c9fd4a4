"""The native backend (the C library of qwen3tts/native, float32 CPU): the few-row float32
product (`qwen3tts_linear_f32`: 2..24 rows, a streaming step's convolution or linear, where
oneDNN is off) and SnakeBeta in one fused pass (`qwen3tts_snake`, either memory layout).

Available where `QWEN3TTS_NATIVE` is not off, the library builds (auto: else one warning and
the chain goes on without it) and the model is float32 on CPU.
"""

from __future__ import annotations

import torch

from ..native.f32 import few_rows_linear

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


OPS = {"gemm": gemm, "snake": snake}
MODULES = ("w8a8_linear", "decoder_stack_step")  # NativeW8A8Linear, NativeStack (native/stack.py)
