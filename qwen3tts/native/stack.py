"""Torch-facing side of the native decode library: a w8a8 linear and a decoder-stack runner.

`NativeW8A8Linear` replaces an `nn.Linear` in w8a8 mode when the library is available (the same
per-channel int8 weights and per-row int8 activations as `quant.W8A8Linear`, computed by
decode.c); it serves every row count (prefill too). `NativeStack` runs all layers of a
`model.layers.Transformer` for a few tokens in one call (decode steps), reading the layers'
norm weights and `NativeW8A8Linear` weights in place and the caller's `KVCache` tensors.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn as nn

from ..int8 import quantize_channels
from . import KALIGN_DEFAULT, Layer, Lin, Stack, load


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeW8A8Linear(nn.Module):
    """y = x W^T (+ b) with int8 W (per output channel) and per-row int8 x; see decode.c."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lib = load()
        w = lin.weight.detach().float().cpu()
        N, K = w.shape
        Kp = -(-K // KALIGN_DEFAULT) * KALIGN_DEFAULT
        q, scale = quantize_channels(w)  # the same int8 weights as quant.Int8Linear
        qp = torch.zeros(N, Kp, dtype=torch.int8)
        qp[:, :K] = q
        self.in_features, self.out_features = K, N
        self.register_buffer("weight_q", qp)  # (N, Kp), zero padded
        self.register_buffer("scales", scale.contiguous())  # (N,) f32
        self.register_buffer("wsum", q.to(torch.int32).sum(1).to(torch.int32).contiguous())  # (N,)
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().cpu().contiguous())
        self.desc = self.make_desc()

    def make_desc(self) -> Lin:
        return Lin(_ptr(self.weight_q), _ptr(self.scales), _ptr(self.wsum), _ptr(self.bias), self.out_features, self.in_features,
                   self.weight_q.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, shape[-1]).float().contiguous()  # (M, K)
        y = torch.empty(x2.shape[0], self.out_features)
        self.lib.qwen3tts_linear(ctypes.byref(self.desc), x2.data_ptr(), x2.shape[0], y.data_ptr(), torch.get_num_threads())
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight (out, in), fp32 per-channel scales (out,))."""
        return self.weight_q[:, : self.in_features], self.scales


class NativeStack:
    """All layers (+ final norm) of a fused, w8a8-native `Transformer` for decode steps."""

    def __init__(self, tr):
        self.lib = load()
        cfg = tr.cfg
        if tr.head_dim > 1024:
            raise ValueError("the native decode supports head_dim <= 1024")
        layers = (Layer * len(tr.layers))()
        for i, layer in enumerate(tr.layers):
            a, m = layer.self_attn, layer.mlp
            lins = (a.qkv_proj, a.o_proj, m.gate_up_proj, m.down_proj)
            if not all(isinstance(x, NativeW8A8Linear) for x in lins) or a.qk_norm_weight is None:
                raise ValueError("NativeStack needs a fused stack with NativeW8A8Linear projections")
            for w in (layer.input_layernorm.weight, layer.post_attention_layernorm.weight, a.qk_norm_weight):
                assert w.dtype == torch.float32 and w.is_contiguous()
            layers[i] = Layer(_ptr(layer.input_layernorm.weight), _ptr(layer.post_attention_layernorm.weight), _ptr(a.qk_norm_weight),
                              *(x.desc for x in lins))
        self.layers = layers  # keeps the structures alive; the tensors stay owned by the modules
        self.desc = Stack(len(tr.layers), cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, tr.head_dim,
                          cfg.intermediate_size, cfg.rms_norm_eps, layers, _ptr(tr.norm.weight))
        self.tr = tr
        self.n_layers = len(tr.layers)

    def _run(self, x: torch.Tensor, pos: torch.Tensor, npos: int, kp, vp, smax, max_len: int) -> torch.Tensor:
        """x (M, hidden) f32 -> final-normed (M, hidden); kp/vp/smax ctypes int64 arrays."""
        cos, sin = self.tr.rope_table(max_len, torch.float32, x.device)
        xin = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # updated in place by the library
        out = torch.empty_like(xin)
        self.lib.qwen3tts_stack_decode(ctypes.byref(self.desc), xin.shape[0], xin.data_ptr(), out.data_ptr(), cos.data_ptr(),
                                       sin.data_ptr(), pos.data_ptr(), npos, kp, vp, smax, torch.get_num_threads())
        return out

    def forward(self, x: torch.Tensor, cache, positions: torch.Tensor) -> torch.Tensor:
        """x (B, T, hidden) at `positions` (T,) of every row of the batched `cache` (B, Hkv, S, D)
        -> final-normed (B, T, hidden)."""
        B, T, H = x.shape
        key = ("native", B, T)
        arrs = cache.__dict__.get(key)
        if arrs is None:  # per-row cache pointers, built once per cache and shape
            M = B * T
            kp = (ctypes.c_int64 * (self.n_layers * M))()
            vp = (ctypes.c_int64 * (self.n_layers * M))()
            for li in range(self.n_layers):
                k, v = cache.k[li], cache.v[li]
                _check_cache(k), _check_cache(v)
                for b in range(B):
                    for t in range(T):
                        kp[li * M + b * T + t] = k[b].data_ptr()
                        vp[li * M + b * T + t] = v[b].data_ptr()
            smax = (ctypes.c_int64 * M)(*([cache.max_len] * M))
            cache.__dict__[key] = arrs = (kp, vp, smax)
        pos = positions.to(torch.int64).contiguous()
        if pos.numel() != T or not 0 <= int(pos.min()) <= int(pos.max()) < cache.max_len:  # the C code trusts these
            raise ValueError(f"positions must be {T} slots of the {cache.max_len}-slot cache")
        out = self._run(x.reshape(B * T, H), pos, T, *arrs, cache.max_len)
        return out.reshape(B, T, H).to(x.dtype)

    def forward_rows(self, x: torch.Tensor, caches: list, positions: list[int]) -> torch.Tensor:
        """x (B, 1, hidden), row b at `positions[b]` of `caches[b]` (batch-1 caches)
        -> final-normed (B, 1, hidden)."""
        B = x.shape[0]
        if len(caches) != B or len(positions) != B or any(not 0 <= p < c.max_len for p, c in zip(positions, caches)):
            raise ValueError("one position per row, inside that row's cache")
        kp = (ctypes.c_int64 * (self.n_layers * B))()
        vp = (ctypes.c_int64 * (self.n_layers * B))()
        for li in range(self.n_layers):
            for b, c in enumerate(caches):
                _check_cache(c.k[li]), _check_cache(c.v[li])
                kp[li * B + b] = c.k[li].data_ptr()
                vp[li * B + b] = c.v[li].data_ptr()
        smax = (ctypes.c_int64 * B)(*[c.max_len for c in caches])
        pos = torch.tensor(positions, dtype=torch.int64)
        out = self._run(x.reshape(B, -1), pos, B, kp, vp, smax, max(c.max_len for c in caches))
        return out.reshape(B, 1, -1).to(x.dtype)


def _check_cache(t: torch.Tensor) -> None:
    if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError("the native decode needs contiguous float32 CPU caches")
