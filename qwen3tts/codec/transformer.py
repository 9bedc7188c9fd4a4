"""The two transformers of the speech tokenizer.

* `DecoderTransformer` mirrors `Qwen3TTSTokenizerV2DecoderTransformerModel` (12.5 Hz): input
  projection, pre-norm layers (RMSNorm eps 1e-5, no q/k norm, RoPE theta 1e4, layer scales,
  SiLU-gated MLP), **sliding window** (key j visible from query i iff i - W < j <= i), final
  RMSNorm, output projection. Streaming keeps a ring of post-RoPE keys/values per layer
  (`[B, H, R, D]`, R = W - 1 + RING_CHUNK, fixed shape; position p lives in slot p % R) and the
  absolute frame position: a pass writes its N <= RING_CHUNK new keys into the ring and attends
  over the ring in place (masked by each slot's position), so no cache is copied per step;
  longer chunks run as several passes. On CPU a pass asks the seam for it in one call
  (`ops.window_stack`: served where every product holds an int8 weight, the quantized modes);
  where it is not served (float32, the parity mode), the modules below run as torch ops.
* `EncoderTransformer` mirrors transformers' `MimiTransformerModel` (25 Hz): LayerNorm (with
  bias) pre-norm, exact-GELU MLP without biases, layer scales, RoPE theta 1e4 and a **plain
  causal mask** (`sliding_window` is not applied by transformers 4.57.3 eager/SDPA; codec.md §5.3).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..model.layers import MLP, Projections, RMSNorm
from .layers import StreamState


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.scale * x


class _Attention(Projections):
    def qkv(self, x, cos, sin):
        """q, k with RoPE and v, each (B, heads, T, D)."""
        if self.qkv_proj is None:
            q, k, v = (t.transpose(1, 2) for t in self.project(x))  # (B, H, T, D)
            return ops.rope(self, q, cos, sin), ops.rope(self, k, cos, sin), v
        # q|k|v from one product; q and k heads are adjacent: one RoPE for both
        B, N, _ = x.shape
        H, Hkv, D = self.heads, self.kv_heads, self.head_dim
        y = self.qkv_proj(x)  # (B, N, (H + 2 Hkv) D)
        qk = ops.rope(self, y[..., : (H + Hkv) * D].view(B, N, H + Hkv, D).transpose(1, 2), cos, sin)  # (B, H + Hkv, N, D)
        v = y[..., (H + Hkv) * D :].view(B, N, Hkv, D).transpose(1, 2)  # (B, Hkv, N, D)
        return qk[:, :H], qk[:, H:], v


RING_CHUNK = 32  # frames one transformer pass takes (the ring holds W - 1 + this many keys)


class DecoderAttention(_Attention):
    state_key = None

    def __init__(self, cfg, window: int):
        super().__init__(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.attention_bias)
        self.window = window

    def new_state(self, batch, device, dtype):
        shape = (batch, self.kv_heads, self.window - 1 + RING_CHUNK, self.head_dim)
        return [torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)]

    def forward(self, x, cos, sin, mask, slots, st: StreamState):
        """slots: the ring slots of the new frames, a `slice` (consecutive slots) or a
        (B or 1, 1, N, 1) index tensor; mask (B or 1, 1, N, R) over the ring: bool, or on CPU the
        same as an additive float mask (0 / -inf, made once per pass)."""
        q, k, v = self.qkv(x, cos, sin)  # (B, H, N, D)
        ck, cv = st.bufs[self.state_key]  # (B, Hkv, R, D)
        if isinstance(slots, slice):
            ck[:, :, slots].copy_(k)
            cv[:, :, slots].copy_(v)
        else:
            idx = slots.expand(k.shape)
            ck.scatter_(2, idx, k)
            cv.scatter_(2, idx, v)
        K, V = ck, cv
        if self.kv_heads != self.heads:
            K = K.repeat_interleave(self.heads // self.kv_heads, dim=1)
            V = V.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if q.device.type == "cpu":
            a = _attend_cpu(q, K, V, mask)
        else:
            a = ops.attention(self, q, K, V, attn_mask=mask)
        return self.out(a)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool attention mask as the additive one `_attend_cpu` takes: 0 where visible, -inf elsewhere."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _attend_cpu(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q K^T / sqrt(D) + bias) V as two batched GEMMs: for the few queries of a streaming
    pass (1..32 over a 103-slot ring) SDPA's CPU kernel costs more than the arithmetic. q (B, H, N, D), K / V (B, H, R, D),
    bias (B or 1, 1, N, R) additive (`additive_mask`; every query sees at least itself)."""
    B, H, N, D = q.shape
    R = K.shape[2]
    bias = bias.expand(B, H, N, R).reshape(B * H, N, R)  # (B*H, N, R)
    s = torch.baddbmm(bias, q.reshape(B * H, N, D), K.reshape(B * H, R, D).transpose(1, 2), alpha=D**-0.5)
    return torch.bmm(torch.softmax(s, dim=-1), V.reshape(B * H, R, D)).view(B, H, N, D)


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DecoderAttention(cfg, cfg.sliding_window)
        self.self_attn_layer_scale = LayerScale(cfg.hidden_size)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)  # SiLU-gated, no biases: the talker MLP
        self.mlp_layer_scale = LayerScale(cfg.hidden_size)

    def forward(self, x, cos, sin, mask, slots, st):
        # x + scale * f(x) as one op (addcmul: the same product and sum)
        x = torch.addcmul(x, self.self_attn_layer_scale.scale, self.self_attn(self.input_layernorm(x), cos, sin, mask, slots, st))
        return torch.addcmul(x, self.mlp_layer_scale.scale, self.mlp(self.post_attention_layernorm(x)))


ROPE_TABLE_MAX = 4096  # positions whose cos/sin rows are cached (later ones are computed per pass)


class DecoderTransformer(nn.Module):
    """(B, T, latent) -> (B, T, latent), streaming over frames with `st.pos` as the first position."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.input_proj = ops.Linear(cfg.latent_dim, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.output_proj = ops.Linear(cfg.hidden_size, cfg.latent_dim)

    def fuse(self) -> None:
        """Fuse q/k/v and gate/up projections (after loading; numerics unchanged)."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        # st.pos: an int (one position for the batch), a list (stacked sessions) or a device
        # tensor (CUDA graph)
        pos, N = st.pos, x.shape[1]
        if N <= RING_CHUNK:
            return self._pass(x, pos, st)
        outs = []
        for s in range(0, N, RING_CHUNK):
            p = pos + s if isinstance(pos, (int, torch.Tensor)) else [q + s for q in pos]
            outs.append(self._pass(x[:, s : s + RING_CHUNK], p, st))
        return torch.cat(outs, dim=1)

    def _pass(self, x: torch.Tensor, pos, st: StreamState) -> torch.Tensor:
        """x (B, N <= RING_CHUNK, latent) at positions pos + 0..N-1 (pos: an int, or per row a
        list / a (B,) tensor)."""
        N = x.shape[1]
        if x.device.type == "cpu":  # the pass in one call where a backend serves it (int8 weights)
            rings = [st.bufs[layer.self_attn.state_key] for layer in self.layers]
            y = ops.window_stack(self, x, pos, rings, lambda: self._rope_rows(pos, N, x.device, x.dtype))  # (B, N, latent)
            if y is not None:
                return y
        if isinstance(pos, int):
            cos, sin, mask, slots = self._host_context(pos, N, x.device, x.dtype)
        else:
            cos, sin, mask, slots = self._context(torch.as_tensor(pos, device=x.device).reshape(-1, 1), N, x.dtype)
        h = self.input_proj(x)
        for layer in self.layers:
            h = layer(h, cos, sin, mask, slots, st)
        return self.output_proj(self.norm(h))

    def _context(self, p0: torch.Tensor, N: int, dtype):
        """RoPE rows (B or 1, 1, N, D), mask (B or 1, 1, N, R) and ring slots (B or 1, 1, N, 1) of
        a pass at positions p0 (B or 1, 1) + 0..N-1, computed on the device (no host sync)."""
        W = self.cfg.sliding_window
        R = W - 1 + RING_CHUNK
        dev = p0.device
        qpos = p0 + torch.arange(N, device=dev)  # (B or 1, N): absolute positions of the new frames
        last = p0 + (N - 1)  # (B or 1, 1): the newest position once this pass's keys are written
        kpos = last - (last - torch.arange(R, device=dev)) % R  # (B or 1, R): position held by each slot (< 0: none yet)
        k, q = kpos[:, None, :], qpos[:, :, None]
        mask = ((k >= 0) & (k <= q) & (k > q - W))[:, None]  # (B or 1, 1, N, R)
        if dev.type == "cpu":  # the CPU attention adds it: made once for all layers
            mask = additive_mask(mask, dtype)
        slots = (qpos % R)[:, None, :, None]  # (B or 1, 1, N, 1)
        cos, sin = ops.rope_tables(qpos, self.cfg.head_dim, self.cfg.rope_theta, dtype)  # (B, N, D)
        return cos[:, None], sin[:, None], mask, slots

    def _rope_rows(self, pos, N: int, device, dtype):
        """cos, sin (1 or B, N, D) of a pass at positions pos + 0..N-1 (pos: an int, or per row a
        list / a (B,) tensor): the values `_host_context` / `_context` give, without the mask."""
        if isinstance(pos, int) and pos + N <= ROPE_TABLE_MAX:
            tab = self._rope_table(device, dtype)
            return tab[0][pos : pos + N][None], tab[1][pos : pos + N][None]  # (1, N, D)
        qpos = torch.as_tensor(pos, device=device).reshape(-1, 1) + torch.arange(N, device=device)  # (B or 1, N)
        return ops.rope_tables(qpos, self.cfg.head_dim, self.cfg.rope_theta, dtype)

    def _rope_table(self, device, dtype):
        """cos / sin rows of positions 0 .. ROPE_TABLE_MAX - 1: (ROPE_TABLE_MAX, D) each, made once."""
        cache = self.__dict__.setdefault("_host_cache", {})
        tkey = ("rope", device, dtype)
        tab = cache.get(tkey)
        if tab is None:
            tab = cache[tkey] = ops.rope_tables(torch.arange(ROPE_TABLE_MAX, device=device), self.cfg.head_dim, self.cfg.rope_theta, dtype)
        return tab

    def _host_context(self, p: int, N: int, device, dtype):
        """`_context` for one host-known first position `p`: RoPE rows sliced from a cached table,
        a 1-frame pass's mask cached per ring phase, consecutive ring slots as a slice."""
        W = self.cfg.sliding_window
        R = W - 1 + RING_CHUNK
        if p + N > ROPE_TABLE_MAX:
            return self._context(torch.tensor([[p]], device=device), N, dtype)
        cache = self.__dict__.setdefault("_host_cache", {})
        tab = self._rope_table(device, dtype)
        cos, sin = tab[0][p : p + N][None, None], tab[1][p : p + N][None, None]  # (1, 1, N, D)
        # from position R - 1 on every slot holds a key: the mask depends on p only through p % R
        mkey = ("mask", device, dtype, R, N, p if p < R else R + p % R)
        mask = cache.get(mkey) if N == 1 else None
        if mask is None:
            _, _, mask, _ = self._context(torch.tensor([[p]], device=device), N, dtype)
            if N == 1:
                cache[mkey] = mask
        s = p % R
        slots = slice(s, s + N) if s + N <= R else (torch.arange(p, p + N, device=device) % R).view(1, 1, N, 1)
        return cos, sin, mask, slots


# --------------------------------------------------------------------------- encoder (Mimi)


class EncoderMLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.fc1 = ops.Linear(hidden, inter, bias=False)
        self.fc2 = ops.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderAttention(_Attention):
    def forward(self, x, cos, sin):
        q, k, v = self.qkv(x, cos, sin)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        return self.out(ops.attention(self, q, k, v, is_causal=True))


class EncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.input_layernorm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.self_attn = EncoderAttention(d, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.attn_head_dim)
        self.self_attn_layer_scale = LayerScale(d)
        self.post_attention_layernorm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = EncoderMLP(d, cfg.intermediate_size)
        self.mlp_layer_scale = LayerScale(d)

    def forward(self, x, cos, sin):
        x = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))


class EncoderTransformer(nn.Module):
    """(B, T25, hidden) -> (B, T25, hidden); positions 0..T25-1, full causal attention."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x):
        pos = torch.arange(x.shape[1], device=x.device)
        cos, sin = ops.rope_tables(pos, self.cfg.attn_head_dim, self.cfg.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return x
