"""Codes -> 24 kHz waveform: `Qwen3TTSTokenizerV2Decoder` (qwen_tts tokenizer_12hz), exact and
streaming.

Data flow for N frames (B = batch, codec.md §6):
    codes (B, 16, N) -> RVQ decode (B, codebook_dim, N) -> pre_conv k3 (B, latent, N)
    -> transformer, window W (B, N, latent) -> 2 x [TransConv x2, ConvNeXt] (B, latent, 4N)
    -> conv k7 (B, decoder_dim, 4N) -> 4 x DecoderBlock (x8, x5, x4, x3) (B, decoder_dim/16, 1920N)
    -> Snake -> conv k7 (B, 1, 1920N) -> clamp(-1, 1)

Every layer is causal, so `step(codes, state)` on consecutive chunks reproduces one offline pass
over the concatenation (streaming state: see `layers.py` and `transformer.py`). `decode` is one
fresh-state pass (processed in bounded pieces to cap memory); `chunked_decode` reproduces the
official `chunked_decode(chunk_size, left_context_size)`, whose chunks restart from zero state.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import CausalConv1d, DecoderBlock, SnakeBeta, StreamState, UpsampleStage, assign_state_keys
from .quantizer import DecoderQuantizer
from .transformer import DecoderTransformer


class CodecDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.quantizer = DecoderQuantizer(cfg.num_quantizers, cfg.codebook_size, cfg.codebook_dim)
        self.pre_conv = CausalConv1d(cfg.codebook_dim, cfg.latent_dim, 3)
        self.pre_transformer = DecoderTransformer(cfg)
        self.upsample = nn.ModuleList([UpsampleStage(cfg.latent_dim, f) for f in cfg.upsampling_ratios])
        dims = [cfg.decoder_dim // 2**i for i in range(len(cfg.upsample_rates) + 1)]
        self.decoder = nn.ModuleList(
            [CausalConv1d(cfg.latent_dim, cfg.decoder_dim, 7)]
            + [DecoderBlock(dims[i], dims[i + 1], r) for i, r in enumerate(cfg.upsample_rates)]
            + [SnakeBeta(dims[-1]), CausalConv1d(dims[-1], 1, 7)]
        )
        self._stateful = assign_state_keys(self)
        self.samples_per_frame = cfg.total_upsample

    # ---- state
    def init_state(self, batch: int = 1, device=None, dtype=None) -> StreamState:
        p = self.pre_conv.conv.weight
        device, dtype = device or p.device, dtype or p.dtype
        return StreamState({m.state_key: m.new_state(batch, device, dtype) for m in self._stateful})

    def state_keys(self) -> list[str]:
        return [m.state_key for m in self._stateful]

    # ---- core
    def step(self, codes: torch.Tensor, st: StreamState, taps: dict | None = None) -> torch.Tensor:
        """codes (B, Q, N) int64 -> waveform (B, N * samples_per_frame); advances `st`."""
        if codes.dim() != 3 or codes.shape[1] != self.cfg.num_quantizers:
            raise ValueError(f"codes must be (B, {self.cfg.num_quantizers}, N), got {tuple(codes.shape)}")
        h = self.quantizer.decode(codes)  # (B, codebook_dim, N)
        _tap(taps, "quantized", h)
        h = self.pre_conv(h, st)  # (B, latent, N)
        _tap(taps, "pre_conv_out", h)
        h = self.pre_transformer(h.transpose(1, 2), st)  # (B, N, latent)
        _tap(taps, "pre_transformer_out", h)
        h = h.transpose(1, 2)  # (B, latent, N)
        for stage in self.upsample:
            h = stage(h, st)  # (B, latent, 2N) per stage
        _tap(taps, "upsample_out", h)
        h = self.decoder[0](h, st)
        _tap(taps, "decoder0_out", h)
        for i in range(1, len(self.decoder) - 2):  # (indices: a slice of a ModuleList builds a new one per call)
            h = self.decoder[i](h, st)
        h = self.decoder[-1](self.decoder[-2](h), st)  # (B, 1, N * spf)
        st.advance(codes.shape[-1])
        return h.clamp(min=-1, max=1)[:, 0]

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, max_chunk: int = 32, taps: dict | None = None) -> torch.Tensor:
        """Exact offline decode: (B, Q, T) -> (B, T * spf). Equals one single forward pass; runs
        as streaming steps of `max_chunk` frames (exact), which keeps the 24 kHz activations
        cache-sized: 32-frame pieces decode ~1.8x faster on CPU than one 125-frame pass."""
        st = self.init_state(codes.shape[0])
        T = codes.shape[-1]
        if taps is not None:  # intermediates only make sense for one pass
            max_chunk = max(T, 1)
        outs = [self.step(codes[..., s : s + max_chunk], st, taps) for s in range(0, T, max_chunk)]
        if not outs:
            return torch.zeros(codes.shape[0], 0, device=codes.device)
        return torch.cat(outs, dim=-1)

    @torch.inference_mode()
    def chunked_decode(self, codes: torch.Tensor, chunk_size: int = 300, left_context: int = 25) -> torch.Tensor:
        """The official `chunked_decode`: independent passes over [s - ctx, e), ctx = 0 for the first
        chunk and `left_context` after; the context's audio is dropped."""
        if chunk_size <= 0 or left_context < 0:
            raise ValueError("chunk_size must be > 0 and left_context >= 0")
        T, spf = codes.shape[-1], self.samples_per_frame
        outs, s = [], 0
        while s < T:
            e = min(s + chunk_size, T)
            ctx = left_context if s - left_context > 0 else s
            w = self.step(codes[..., s - ctx : e], self.init_state(codes.shape[0]))
            outs.append(w[..., ctx * spf :])
            s = e
        if not outs:
            return torch.zeros(codes.shape[0], 0, device=codes.device)
        return torch.cat(outs, dim=-1)


def _tap(taps, name, t):
    if taps is not None:
        taps[name] = t.detach().clone()
