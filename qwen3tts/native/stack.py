"""Torch-facing side of the native decode library: a w8a8 linear and a decoder-stack runner.

`NativeW8A8Linear` replaces an `nn.Linear` in w8a8 mode when the library is available (the same
per-channel int8 weights and per-row int8 activations as `quant.W8A8Linear`, computed by
decode.c); it serves every row count (prefill too). `NativeStack` runs all layers of a
`model.layers.Transformer` for a few tokens in one call (decode steps), reading the layers'
norm weights and `NativeW8A8Linear` weights in place and the caller's `KVCache` tensors; a prefill is the same
call with the prompt's tokens as rows at consecutive positions (they attend causally).
"""

from __future__ import annotations

import ctypes
import threading

import torch
import torch.nn as nn

from ..int8 import quantize_channels
from . import KALIGN_DEFAULT, Layer, Lin, Stack, hugepages, load
from .linear import NativeLinear


GROUP, CHUNK = 4, 64  # decode.c W8_NR, W8_CH: weight rows per interleaved group, bytes per row piece


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeW8A8Linear(NativeLinear):
    """y = x W^T (+ b) with int8 W (per output channel) and per-row int8 x; see decode.c."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lib = load()
        w = lin.weight.detach().float().cpu()
        N, K = w.shape
        Kp = -(-K // KALIGN_DEFAULT) * KALIGN_DEFAULT
        q, scale = quantize_channels(w)  # the same int8 weights as quant.Int8Linear
        self.in_features, self.out_features = K, N
        self.register_buffer("weight_q", pack_rows(q, Kp))  # (groups, Kp / 64, 4, 64): decode.c's layout
        self.register_buffer("scales", scale.contiguous())  # (N,) f32
        self.register_buffer("wsum", q.to(torch.int32).sum(1).to(torch.int32).contiguous())  # (N,)
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().cpu().contiguous())
        self.desc = self.make_desc()

    def make_desc(self) -> Lin:
        return Lin(_ptr(self.weight_q), _ptr(self.scales), _ptr(self.wsum), _ptr(self.bias), self.out_features, self.in_features,
                   self.weight_q.shape[1] * CHUNK)

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight (out, in), fp32 per-channel scales (out,)); the weight is unpacked (a copy)."""
        return unpack_rows(self.weight_q, self.out_features)[:, : self.in_features], self.scales


def pack_rows(q: torch.Tensor, Kp: int) -> torch.Tensor:
    """decode.c's layout of int8 weights q (N, K): rows zero padded to Kp inputs and to a multiple
    of GROUP rows, each group of GROUP rows interleaved by CHUNK-byte pieces of input, so that a
    group (and a run of groups) is read as one sequential stream: (ceil(N / GROUP), Kp / CHUNK,
    GROUP, CHUNK) int8, contiguous, in huge pages where it can be (`hugepages`)."""
    N, K = q.shape
    G = -(-N // GROUP)
    qp = torch.zeros(G * GROUP, Kp, dtype=torch.int8)
    qp[:N, :K] = q
    out = hugepages.weight((G, Kp // CHUNK, GROUP, CHUNK), torch.int8)  # streamed whole: the huge-page arena
    return out.copy_(qp.reshape(G, GROUP, Kp // CHUNK, CHUNK).transpose(1, 2))  # (group, chunk, row, byte)


def unpack_rows(packed: torch.Tensor, N: int) -> torch.Tensor:
    """`pack_rows`' inverse: (N, Kp) int8 (the input padding kept)."""
    G, C = packed.shape[:2]
    return packed.transpose(1, 2).reshape(G * GROUP, C * CHUNK)[:N]


class NativeStack:
    """All layers (+ final norm) of a fused, w8a8-native `Transformer` for decode steps and prefills."""

    def __init__(self, tr):
        self.lib = load()
        cfg = tr.cfg
        if tr.head_dim > 1024:
            raise ValueError("the native decode supports head_dim <= 1024")
        layers = (Layer * len(tr.layers))()
        for i, layer in enumerate(tr.layers):
            a, m = layer.self_attn, layer.mlp
            lins = (a.qkv_proj, a.o_proj, m.gate_up_proj, m.down_proj)
            if not all(isinstance(x, NativeLinear) for x in lins) or a.qk_norm_weight is None:
                raise ValueError("NativeStack needs a fused stack with NativeW8A8Linear or NativeW4A8Linear projections")
            for w in (layer.input_layernorm.weight, layer.post_attention_layernorm.weight, a.qk_norm_weight):
                assert w.dtype == torch.float32 and w.is_contiguous()
            layers[i] = Layer(_ptr(layer.input_layernorm.weight), _ptr(layer.post_attention_layernorm.weight), _ptr(a.qk_norm_weight),
                              *(x.desc for x in lins))
        self.layers = layers  # keeps the structures alive; the tensors stay owned by the modules
        self.desc = Stack(len(tr.layers), cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, tr.head_dim,
                          cfg.intermediate_size, cfg.rms_norm_eps, layers, _ptr(tr.norm.weight))
        self.tr = tr
        self.n_layers = len(tr.layers)
        self.prefixes = PrefixStore()

    def _run(self, x: torch.Tensor, pos: torch.Tensor, npos: int, kp, vp, smax, max_len: int) -> torch.Tensor:
        """x (M, hidden) f32 -> final-normed (M, hidden); kp/vp/smax ctypes int64 arrays."""
        cos, sin = self.tr.rope_table(max_len, torch.float32, x.device)
        xin = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # updated in place by the library
        out = torch.empty_like(xin)
        self.lib.qwen3tts_stack_decode(ctypes.byref(self.desc), xin.shape[0], xin.data_ptr(), out.data_ptr(), cos.data_ptr(),
                                       sin.data_ptr(), pos.data_ptr(), npos, kp, vp, smax, torch.get_num_threads())
        return out

    def _pointers(self, cache, B: int, T: int):
        """(kp, vp, smax) ctypes arrays for B * T rows of the batched `cache`, built once per cache
        and shape: row b * T + t of layer l is batch row b's (Hkv, S, D) slab of that layer."""
        key = ("native", B, T)
        arrs = cache.__dict__.get(key)
        if arrs is None:
            M = B * T
            for t in cache.k + cache.v:
                _check_cache(t)

            def rows(ts):  # per layer, batch row b's slab address, once for each of its T rows
                slabs = [t.data_ptr() + b * t.stride(0) * t.element_size() for t in ts for b in range(B)]
                return [a for a in slabs for _ in range(T)]

            kp = (ctypes.c_int64 * (self.n_layers * M))(*rows(cache.k))
            vp = (ctypes.c_int64 * (self.n_layers * M))(*rows(cache.v))
            smax = (ctypes.c_int64 * M)(*([cache.max_len] * M))
            cache.__dict__[key] = arrs = (kp, vp, smax)
        return arrs

    def forward(self, x: torch.Tensor, cache, positions: torch.Tensor, shared: int = 0) -> torch.Tensor:
        """x (B, T, hidden) at `positions` (T,) of every row of the batched `cache` (B, Hkv, S, D)
        -> final-normed (B, T, hidden).

        A prefill (B = 1, positions 0..T-1) whose first rows equal those of an earlier prefill's
        kept prefix takes their keys, values and outputs from it and computes only the rest; its
        first `shared` rows (the part of a prompt that depends only on the voice) are kept for
        the next one (`PrefixStore`). Rows are computed each on its own, so this gives the same
        numbers, bit for bit, as computing every row."""
        B, T, H = x.shape
        pos = positions.to(torch.int64).contiguous()
        if pos.numel() != T or not 0 <= int(pos.min()) <= int(pos.max()) < cache.max_len:  # the C code trusts these
            raise ValueError(f"positions must be {T} slots of the {cache.max_len}-slot cache")
        if B == 1 and T > 1 and (shared > 0 or self.prefixes.entries) and int(pos[0]) == 0 and int(pos[-1]) == T - 1:
            return self._prefill(x, cache, pos, shared)
        out = self._run(x.reshape(B * T, H), pos, T, *self._pointers(cache, B, T), cache.max_len)
        return out.reshape(B, T, H).to(x.dtype)

    def _prefill(self, x: torch.Tensor, cache, pos: torch.Tensor, shared: int) -> torch.Tensor:
        """`forward` of a batch-1 prompt at positions 0..T-1, reusing a kept prefix."""
        T, H = x.shape[1], x.shape[2]
        rows = x[0].to(torch.float32)  # (T, H)
        entry, P = self.prefixes.match(rows)
        if P:
            for dst, src in zip(cache.k + cache.v, entry.k + entry.v):
                dst[0, :, :P].copy_(src[:, :P])  # (Hkv, P, D)
        out = torch.empty(T, H)
        if P:
            out[:P] = entry.out[:P]
        if P < T:
            out[P:] = self._run(rows[P:], pos[P:], T - P, *self._pointers(cache, 1, T - P), cache.max_len)
        if shared > P:
            self.prefixes.keep(rows[:shared], [t[0, :, :shared] for t in cache.k], [t[0, :, :shared] for t in cache.v], out[:shared])
        return out[None].to(x.dtype)

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


class _Prefix:
    def __init__(self, rows, k, v, out):
        self.rows, self.k, self.v, self.out = rows, k, v, out  # (P, H); per layer (Hkv, P, D); (P, H)


class PrefixStore:
    """The voice parts of recent prompts: their input rows, and per layer the keys and values
    they leave in the cache, with their outputs (a few MB each; the most recent `size`)."""

    def __init__(self, size: int = 4):
        self.size = size
        self.entries: list[_Prefix] = []  # most recently used first
        self.lock = threading.Lock()

    def match(self, rows: torch.Tensor) -> tuple[_Prefix | None, int]:
        """The kept prefix sharing the most leading rows with `rows` (T, H) and how many (bit
        for bit equal rows); (None, 0) when none does."""
        best, n = None, 0
        with self.lock:
            for e in self.entries:
                m = min(e.rows.shape[0], rows.shape[0])
                eq = (e.rows[:m] == rows[:m]).all(1)
                k = m if bool(eq.all()) else int(eq.to(torch.int8).argmin())
                if k > n:
                    best, n = e, k
            if best is not None:
                self.entries.remove(best)
                self.entries.insert(0, best)
        return best, n

    def keep(self, rows: torch.Tensor, k: list, v: list, out: torch.Tensor) -> None:
        e = _Prefix(rows.clone(), [t.clone() for t in k], [t.clone() for t in v], out.clone())
        with self.lock:
            self.entries.insert(0, e)
            del self.entries[self.size :]

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


def _check_cache(t: torch.Tensor) -> None:
    if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError("the native decode needs contiguous float32 CPU caches")
