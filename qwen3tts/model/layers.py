"""The Qwen3 decoder block shared by the talker and the code predictor, with a static KV cache.

Mirrors `Qwen3TTSTalkerDecoderLayer` / `Qwen3TTSDecoderLayer` (qwen_tts modeling_qwen3_tts.py,
talker.md §3.2): pre-norm RMSNorm (eps from config, f32 statistics), q/k RMSNorm per head over
head_dim *before* RoPE, rotate-half RoPE (the talker's interleaved M-RoPE with three identical
position rows is exactly 1-D RoPE, talker.md §3.3), GQA attention (SDPA, scale 1/sqrt(head_dim)),
SiLU-gated MLP, no biases.

KV cache: `KVCache` holds `[layers] x (B, H_kv, S_max, D)` buffers allocated once; a forward
writes its keys/values at `positions` in place (index_copy_). Attention then reads either the
first `kv_len` slots (host-known length: the CPU path, no wasted work) or all `S_max` slots
under a position mask (fixed shapes: the CUDA-graph path).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops


# Up to this many tokens per row a forward with a native stack runs in the native library: decode
# steps and prefills (one call for every layer; its attention is a plain loop, quadratic in the
# tokens, so longer prompts use torch ops).
NATIVE_MAX_TOKENS = 512


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return ops.rms_norm(self, x, self.weight, self.eps)


class KVCache:
    """Static per-session K/V buffers: k[i], v[i] of shape (B, H_kv, S_max, D). `zeroed=False`
    leaves the slots unwritten (no zero fill, no first touch of pages never used): only for a
    cache whose readers attend to written slots alone (kv_len / per-row lengths, not masks)."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int, device, dtype, zeroed: bool = True):
        shape = (batch, kv_heads, max_len, head_dim)
        make = torch.zeros if zeroed else torch.empty
        self.k = [make(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [make(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len

    def reset(self) -> None:
        for t in self.k + self.v:
            t.zero_()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class Projections(nn.Module):
    """q/k/v/o projections of a (GQA) attention, checkpoint names `{q,k,v,o}_proj`; `fuse()`
    replaces q/k/v by one projection after loading. Shared by the talker/predictor attention and
    the codec transformers."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, bias: bool = False):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = ops.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = ops.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = ops.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = ops.Linear(heads * head_dim, hidden, bias=bias)
        self.qkv_proj: ops.Linear | None = None  # built by `fuse()` after loading

    def fuse(self) -> None:
        """Replace q/k/v by one projection (one matrix-vector product per token instead of three)."""
        if self.qkv_proj is not None:
            return
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        b = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        lin = ops.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype).requires_grad_(False)
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
        self.qkv_proj = lin
        del self.q_proj, self.k_proj, self.v_proj

    def project(self, x):
        """x (B, T, hidden) -> q (B, T, H, D), k and v (B, T, Hkv, D)."""
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split([self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return (q.reshape(B, T, self.heads, self.head_dim), k.reshape(B, T, self.kv_heads, self.head_dim),
                v.reshape(B, T, self.kv_heads, self.head_dim))

    def out(self, a):  # (B, H, T, D) -> (B, T, hidden)
        B, H, T, D = a.shape
        return self.o_proj(a.transpose(1, 2).reshape(B, T, H * D))


class Attention(Projections):
    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float, bias: bool = False):
        super().__init__(hidden, heads, kv_heads, head_dim, bias)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)
        self.eps = eps
        self.register_buffer("qk_norm_weight", None, persistent=False)  # (H + Hkv, D), built by `fuse()`

    def fuse(self) -> None:
        super().fuse()
        # the q and k heads are adjacent in the fused output: one norm and one RoPE for both
        self.qk_norm_weight = torch.cat([self.q_norm.weight.detach().expand(self.heads, -1),
                                         self.k_norm.weight.detach().expand(self.kv_heads, -1)]).contiguous()

    def qkv(self, x, cos, sin):
        """x (B, T, hidden) -> q (B, H, T, D), k and v (B, Hkv, T, D): q/k RMSNorm per head, then
        RoPE (cos/sin broadcastable to (B, 1, T, D))."""
        if self.qkv_proj is None or self.qk_norm_weight is None:
            q, k, v = self.project(x)
            q = self.q_norm(q).transpose(1, 2)  # (B, H, T, D)
            k = self.k_norm(k).transpose(1, 2)  # (B, Hkv, T, D)
            return ops.rope(self, q, cos, sin), ops.rope(self, k, cos, sin), v.transpose(1, 2)
        B, T, _ = x.shape
        H, Hk, D = self.heads, self.kv_heads, self.head_dim
        y = self.qkv_proj(x)  # (B, T, (H + 2 Hkv) D)
        qk = ops.rms_norm(self, y[..., : (H + Hk) * D].view(B, T, H + Hk, D), self.qk_norm_weight, self.eps)
        qk = ops.rope(self, qk.transpose(1, 2), cos, sin)  # (B, H + Hkv, T, D)
        v = y[..., (H + Hk) * D :].view(B, T, Hk, D).transpose(1, 2)  # (B, Hkv, T, D)
        return qk[:, :H], qk[:, H:], v

    def forward(self, x, cos, sin, k_cache, v_cache, positions, kv_len: int | None, mask):
        T = x.shape[1]
        q, k, v = self.qkv(x, cos, sin)
        k_cache.index_copy_(2, positions, k)
        v_cache.index_copy_(2, positions, v)
        if kv_len is not None:
            K, V = k_cache[:, :, :kv_len], v_cache[:, :, :kv_len]
        else:
            K, V = k_cache, v_cache
        gqa = self.kv_heads != self.heads
        if mask is None:  # host-known: queries are the last T of kv_len keys
            if T == 1:
                a = ops.attention(self, q, K, V, enable_gqa=gqa)
            elif T == kv_len:
                a = ops.attention(self, q, K, V, is_causal=True, enable_gqa=gqa)
            else:
                kpos = torch.arange(kv_len, device=x.device)
                m = kpos[None, :] <= (kv_len - T + torch.arange(T, device=x.device))[:, None]
                a = ops.attention(self, q, K, V, attn_mask=m, enable_gqa=gqa)
        else:
            a = ops.attention(self, q, K, V, attn_mask=mask, enable_gqa=gqa)
        return self.out(a)

    def forward_rows(self, x, cos, sin, k_caches, v_caches, positions: list[int]):
        """Batched decode: row b of x (B, 1, hidden) is the next token of session b, at
        `positions[b]` of that session's own cache (k_caches[b]: (1, Hkv, S_b, D)); cos/sin
        (B, 1, 1, D). Projections run as one (B, hidden) GEMM (the weights are read once for
        all sessions); attention runs per row over that row's `positions[b] + 1` keys."""
        q, k, v = self.qkv(x, cos, sin)  # (B, H|Hkv, 1, D)
        gqa = self.kv_heads != self.heads
        out = []
        for b, p in enumerate(positions):
            kc, vc = k_caches[b], v_caches[b]
            kc[:, :, p : p + 1].copy_(k[b : b + 1])
            vc[:, :, p : p + 1].copy_(v[b : b + 1])
            out.append(ops.attention(self, q[b : b + 1], kc[:, :, : p + 1], vc[:, :, : p + 1], enable_gqa=gqa))
        return self.out(out[0] if len(out) == 1 else torch.cat(out))  # (B, 1, hidden)


    def forward_static(self, x, cos, sin, k_cache, v_cache, positions, mask):
        """Fixed-shape batched decode (CUDA graphs): row b of x (B, 1, hidden) is the next token of
        the session in row b of the batched cache (B, Hkv, S, D), at positions[b] (a device
        tensor); its key/value are scattered there and attention reads all S slots under
        `mask` (B, 1, 1, S) (slot <= position). cos/sin (B, 1, 1, D)."""
        q, k, v = self.qkv(x, cos, sin)  # (B, H|Hkv, 1, D)
        B, H, _, D = q.shape
        idx = positions.view(-1, 1, 1, 1).expand(-1, k.shape[1], 1, k.shape[3])  # (B, Hkv, 1, D)
        k_cache.scatter_(2, idx, k)
        v_cache.scatter_(2, idx, v)
        # GQA without repeating the cache: the H / Hkv query heads of one KV head become that
        # head's queries (one token each): (B, H, 1, D) -> (B, Hkv, H / Hkv, D)
        qg = q.reshape(B, self.kv_heads, H // self.kv_heads, D)
        a = ops.attention(self, qg, k_cache, v_cache, attn_mask=mask)  # (B, Hkv, H / Hkv, D)
        return self.out(a.reshape(B, H, 1, D))  # (B, 1, hidden)


class MLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = ops.Linear(hidden, inter, bias=False)
        self.up_proj = ops.Linear(hidden, inter, bias=False)
        self.down_proj = ops.Linear(inter, hidden, bias=False)
        self.gate_up_proj: ops.Linear | None = None  # built by `fuse()` after loading
        self.inter = inter

    def fuse(self) -> None:
        if self.gate_up_proj is not None:
            return
        w = torch.cat([self.gate_proj.weight, self.up_proj.weight])
        lin = ops.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype).requires_grad_(False)
        lin.weight.copy_(w)
        self.gate_up_proj = lin
        del self.gate_proj, self.up_proj

    def forward(self, x):
        if self.gate_up_proj is not None:
            g, u = self.gate_up_proj(x).split(self.inter, dim=-1)
            return self.down_proj(F.silu(g) * u)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(
            cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.attn_head_dim, cfg.rms_norm_eps, cfg.attention_bias
        )
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, k_cache, v_cache, positions, kv_len, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, positions, kv_len, mask)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_static(self, x, cos, sin, k_cache, v_cache, positions, mask):
        x = x + self.self_attn.forward_static(self.input_layernorm(x), cos, sin, k_cache, v_cache, positions, mask)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_rows(self, x, cos, sin, k_caches, v_caches, positions):
        x = x + self.self_attn.forward_rows(self.input_layernorm(x), cos, sin, k_caches, v_caches, positions)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Layers + final norm. Module names `layers.N.*`, `norm.weight` as in the checkpoint."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.head_dim = cfg.attn_head_dim
        self._rope = None  # cached (cos, sin) for positions [0, n), per dtype/device
        self.native = None  # a native.stack.NativeStack running decode steps (w8a8 on CPU), when set

    def rope(self, positions: torch.Tensor, max_len: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin rows for `positions` (all < max_len), gathered from a cached table: no host
        sync, fixed shapes (the table is rebuilt only when a longer cache appears)."""
        c = self.rope_table(max_len, dtype, positions.device)
        return c[0][positions], c[1][positions]

    def rope_table(self, max_len: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached cos/sin tables (>= max_len, head_dim) for positions 0, 1, ..."""
        c = self._rope
        if c is None or c[0].shape[0] < max_len or c[0].dtype != dtype or c[0].device != torch.device(device):
            self._rope = c = ops.rope_tables(torch.arange(max_len, device=device), self.head_dim, self.cfg.rope_theta, dtype)
        return c

    def fuse(self) -> None:
        """Fuse q/k/v and gate/up projections (call after loading weights)."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def new_cache(self, batch: int, max_len: int, device=None, dtype=None, zeroed: bool = True) -> KVCache:
        w = self.norm.weight
        return KVCache(len(self.layers), batch, self.cfg.num_key_value_heads, max_len, self.head_dim, device or w.device, dtype or w.dtype,
                       zeroed)

    def forward(self, x: torch.Tensor, cache: KVCache, positions: torch.Tensor, kv_len: int | None = None, mask=None,
                shared: int = 0) -> torch.Tensor:
        """x (B, T, hidden) at absolute `positions` (T,) -> final-normed hidden (B, T, hidden).

        Either `kv_len` (attend to cache slots [0, kv_len); positions are its last T) or `mask`
        ((T, S_max) bool, attend to all slots under the mask). `shared`: a prompt's leading rows
        that depend only on the voice (a native stack keeps them for the next prompt's prefill)."""
        if self.native is not None and mask is None and x.shape[1] <= NATIVE_MAX_TOKENS:  # decode steps, prefills
            return self.native.forward(x, cache, positions, shared)
        cos, sin = self.rope(positions, cache.max_len, x.dtype)  # (T, D)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.k[i], cache.v[i], positions, kv_len, mask)
        return self.norm(x)

    def forward_rows(self, x: torch.Tensor, caches: list[KVCache], positions: list[int]) -> torch.Tensor:
        """One decode step for B sessions at once: x (B, 1, hidden), row b at absolute position
        `positions[b]` of `caches[b]` (each a batch-1 cache) -> final-normed hidden (B, 1, hidden)."""
        if self.native is not None:
            return self.native.forward_rows(x, caches, positions)
        pos = torch.tensor(positions, device=x.device)
        cos, sin = self.rope(pos, max(c.max_len for c in caches), x.dtype)  # (B, D)
        cos, sin = cos[:, None, None], sin[:, None, None]  # (B, 1, 1, D): each row its own position
        for i, layer in enumerate(self.layers):
            x = layer.forward_rows(x, cos, sin, [c.k[i] for c in caches], [c.v[i] for c in caches], positions)
        return self.norm(x)

    def forward_static(self, x: torch.Tensor, cache: KVCache, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One fixed-shape decode step for a batched cache (`static_batch`): x (B, 1, hidden), row
        b at the device position positions[b] (B,) of row b of `cache` (batch B), attending to
        the slots where mask (B, 1, 1, S) is True -> final-normed hidden (B, 1, hidden)."""
        cos, sin = self.rope(positions, cache.max_len, x.dtype)  # (B, D)
        cos, sin = cos[:, None, None], sin[:, None, None]  # (B, 1, 1, D)
        for i, layer in enumerate(self.layers):
            x = layer.forward_static(x, cos, sin, cache.k[i], cache.v[i], positions, mask)
        return self.norm(x)
