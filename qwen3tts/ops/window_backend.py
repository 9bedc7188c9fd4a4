"""The window backend: the codec decoder transformer's sliding-window pass (codec/transformer.py)
in the native library, float32 on CPU.

* `window_stack`: all its layers for one pass of at most a ring chunk of frames in one call
  (native/codec_stack.py, codec.c `qwen3tts_codec_stack`), where each of their products holds an
  int8 weight (the quantized modes: codec_quant.py through the w8f backend, whose kernel it
  calls). It declines every other owner (float weights, unfused projections): the layers then
  run one by one.
* `window_attention`: one layer's attention after its fused q|k|v product (`qwen3tts_window_attention`:
  RoPE on the q and k heads, the keys / values into the ring, each head's softmax over the ring
  slots in the window): one call instead of ~18 torch ops, the float32 mode's path.

Available where the native library is loaded, float32 on CPU.
"""

from __future__ import annotations

import torch

from . import native_backend

NAME = "window"
CACHE = "_window_stack"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return native_backend.available(opts, device, dtype)


def window_stack(plan, owner, x, cos, sin, pos, rings):
    from ..native import codec_stack

    first = owner.layers[0].self_attn.qkv_proj
    if first is None or codec_stack.SLOT not in first.__dict__ or x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    st = owner.__dict__.get(CACHE)
    if st is None or st.key != codec_stack.key(owner):
        if not codec_stack.eligible(owner):
            return None
        st = owner.__dict__[CACHE] = codec_stack.CodecStack(owner, rings[0][0].shape[2])
    return st(plan.lib, x, cos, sin, pos, rings)


def window_attention(plan, owner, qkv, cos, sin, pos, k, v):
    from ..native.codec_stack import window_attention as run

    if qkv.dtype != torch.float32 or qkv.device.type != "cpu":
        return None
    return run(plan.lib, owner, qkv, cos, sin, pos, k, v)


OPS = {"window_stack": window_stack, "window_attention": window_attention}
