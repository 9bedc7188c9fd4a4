"""`CodecStack`: the codec decoder transformer (codec/transformer.py DecoderTransformer, mirroring
`Qwen3TTSTokenizerV2DecoderTransformerModel`: input projection, layers, final norm, output
projection) for one pass of a few frames in one native call (`qwen3tts_codec_stack`, rows.c),
in the quantized modes where every one of its products holds an int8 weight (native/w8f.py
`W8Weight`, kept by the seam's w8f backend).

Why: a streaming push runs the 8 layers on one frame; there each layer's ~20 torch ops (norms,
RoPE, the ring write, two batched products and a softmax for the attention, layer scales) cost
more than its four weight-bound products. The call computes the same products with the same
kernel (`qwen3tts_linear_w8f`: a row's result does not depend on the other rows) and the rest
in C; the ring of post-RoPE keys / values and the window are the Python layers' (transformer.py).

Not in the official model (it has no quantization); the seam's `window_stack` op
(ops/window_backend.py) serves it.
"""

from __future__ import annotations

import ctypes

import torch

from ..ops.w8f_backend import SLOT  # where a product's int8 weight is kept

FIELDS = 20  # rows.c CS_FIELDS: int64 values per layer in the table
HEAD_FIELDS = 9  # rows.c CS_HEAD_FIELDS: the projections in and out, the final norm (after the layers)


def _product(lin) -> list[int]:
    """A product's table fields: int8 weight, its row stride, scales, bias (0: none)."""
    q = lin.__dict__[SLOT]
    return [q.weight_q.data_ptr(), q.ld, q.scales.data_ptr(), 0 if lin.bias is None else lin.bias.detach().contiguous().data_ptr()]


def eligible(tr) -> bool:
    """Every product of `tr` holds an int8 weight, its layers' fused (q|k|v, gate|up), and its
    norms share one epsilon."""
    if tr.norm.eps != tr.layers[0].input_layernorm.eps:
        return False
    for layer in tr.layers:
        a, m = layer.self_attn, layer.mlp
        lins = (a.qkv_proj, a.o_proj, m.gate_up_proj, m.down_proj, tr.input_proj, tr.output_proj)
        if layer.post_attention_layernorm.eps != layer.input_layernorm.eps:
            return False
        if any(lin is None or SLOT not in lin.__dict__ or (lin.bias is not None and not lin.bias.is_contiguous()) for lin in lins):
            return False
    return True


def key(tr):
    """What the table depends on: the first layer's int8 weight and norm weight."""
    layer = tr.layers[0]
    return id(layer.self_attn.qkv_proj.__dict__.get(SLOT)), layer.input_layernorm.weight.data_ptr()


class CodecStack:
    """The pointer table of a DecoderTransformer (its module keeps the tensors alive)."""

    __slots__ = ("key", "table", "dims", "eps", "n_layers", "ring", "latent")

    def __init__(self, tr, ring: int):
        cfg = tr.cfg
        rows = []
        for layer in tr.layers:
            a, m = layer.self_attn, layer.mlp
            rows += [layer.input_layernorm.weight.data_ptr(), *_product(a.qkv_proj), *_product(a.o_proj),
                     layer.self_attn_layer_scale.scale.data_ptr(), layer.post_attention_layernorm.weight.data_ptr(),
                     *_product(m.gate_up_proj), *_product(m.down_proj), layer.mlp_layer_scale.scale.data_ptr()]
        rows += [*_product(tr.input_proj)[:4], tr.norm.weight.data_ptr(), *_product(tr.output_proj)]
        assert len(rows) == FIELDS * len(tr.layers) + HEAD_FIELDS
        a = tr.layers[0].self_attn
        self.key = key(tr)
        self.table = torch.tensor(rows, dtype=torch.int64)
        self.n_layers, self.ring, self.latent = len(tr.layers), ring, cfg.latent_dim
        dims = [cfg.hidden_size, cfg.intermediate_size, a.heads, a.kv_heads, a.head_dim, cfg.sliding_window, ring, cfg.latent_dim]
        self.dims = torch.tensor(dims, dtype=torch.int32)  # rows.c: H, I, heads, kv heads, D, W, R, L
        self.eps = float(tr.layers[0].input_layernorm.eps)

    def __call__(self, lib, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos, rings) -> torch.Tensor | None:
        """x (B, N, latent) -> (B, N, latent); cos / sin (1 or B, N, D) contiguous; pos: the rows'
        first positions (an int or B ints); rings: per layer its (B, Hkv, R, D) key and value
        rings, written. None where an operand is not as the call needs."""
        B, N, _ = x.shape
        if not (x.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()):
            return None
        kv = []
        for k, v in rings:
            if not (k.is_contiguous() and v.is_contiguous() and k.shape[0] == B and k.shape[2] == self.ring):
                return None
            kv += [k.data_ptr(), v.data_ptr()]
        out = torch.empty(B, N, self.latent)
        if lib.qwen3tts_codec_stack(self.table.data_ptr(), self.n_layers, self.dims.data_ptr(), self.eps, x.data_ptr(), out.data_ptr(), B, N,
                                    cos.data_ptr(), sin.data_ptr(), _cs_stride(cos, N), _positions(pos, B), (ctypes.c_int64 * len(kv))(*kv),
                                    torch.get_num_threads()):
            raise MemoryError("qwen3tts_codec_stack: the native call could not allocate its buffers")
        return out


def _positions(pos, B: int):
    """The rows' first positions as a C int64 array."""
    return (ctypes.c_int64 * B)(*([pos] * B if isinstance(pos, int) else [int(q) for q in pos]))


def _cs_stride(cos: torch.Tensor, N: int) -> int:
    """Floats between the RoPE rows of consecutive batch rows (0: one set for all)."""
    return 0 if cos.shape[0] == 1 else N * cos.shape[-1]
