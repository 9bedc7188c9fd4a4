"""The window backend of `window_stack`: the codec decoder transformer (codec/transformer.py, a
sliding-window pass: projections, layers, final norm) for one pass of at most a ring chunk of
frames in one native call (native/codec_stack.py, rows.c `qwen3tts_codec_stack`), where each of
its products holds an int8 weight (the quantized modes: codec_quant.py through the w8f backend, whose
kernel it calls). It declines every other owner (float weights, the parity mode; unfused
projections): the transformer then runs as torch ops.

Available where the native library is loaded, float32 on CPU.
"""

from __future__ import annotations

import torch

from . import native_backend

NAME = "window"
CACHE = "_window_stack"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return native_backend.available(opts, device, dtype)


def window_stack(plan, owner, x, pos, rings, rope):
    from ..native import codec_stack

    first = owner.layers[0].self_attn.qkv_proj
    if first is None or codec_stack.SLOT not in first.__dict__ or x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 3:
        return None
    st = owner.__dict__.get(CACHE)
    if st is None or st.key != codec_stack.key(owner):
        if not codec_stack.eligible(owner):
            return None
        st = owner.__dict__[CACHE] = codec_stack.CodecStack(owner, rings[0][0].shape[2])
    cos, sin = rope()
    return st(plan.lib, x.contiguous(), cos.contiguous(), sin.contiguous(), pos, rings)


OPS = {"window_stack": window_stack}
