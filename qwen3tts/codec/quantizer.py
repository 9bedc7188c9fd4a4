"""Residual vector quantizers of the speech tokenizer.

* Decoder side mirrors `SplitResidualVectorQuantizer` (qwen_tts tokenizer_12hz): codebook
  `embedding_sum / clamp(cluster_usage, 1e-5)`, quantizer 0 through `rvq_first.output_proj`,
  quantizers 1.. summed (in order) through `rvq_rest.output_proj` (1x1 convs, no bias).
* Encoder side mirrors transformers' `MimiSplitResidualVectorQuantizer`: semantic and acoustic
  branches both project the *same* embedding with their own `input_proj`, then quantize
  residually by nearest codebook entry (`torch.cdist` in float32, first index on ties).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_EPS = 1e-5  # cluster_usage clamp, encoder and decoder


class _DecoderCodebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("embedding_sum", torch.zeros(size, dim))
        self.register_buffer("cluster_usage", torch.ones(size))
        self.register_buffer("embedding", torch.zeros(size, dim), persistent=False)

    def refresh(self):
        self.embedding.copy_(self.embedding_sum / self.cluster_usage.clamp(min=_EPS)[:, None])


class _VQ(nn.Module):
    def __init__(self, size, dim):
        super().__init__()
        self._codebook = _DecoderCodebook(size, dim)


class _RVQStack(nn.Module):
    def __init__(self, n, size, dim):
        super().__init__()
        self.layers = nn.ModuleList([_VQ(size, dim) for _ in range(n)])


class _DecoderRVQ(nn.Module):
    def __init__(self, n: int, size: int, dim: int, io_dim: int):
        super().__init__()
        self.vq = _RVQStack(n, size, dim)
        self.input_proj = nn.Conv1d(io_dim, dim, 1, bias=False)  # unused at decode (kept: checkpoint tensor)
        self.output_proj = nn.Conv1d(dim, io_dim, 1, bias=False)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n, T) -> (B, io_dim, T)."""
        q = None
        for i, layer in enumerate(self.vq.layers):
            e = F.embedding(codes[:, i], layer._codebook.embedding)  # (B, T, dim)
            q = e if q is None else q + e
        return self.output_proj(q.transpose(1, 2))


class DecoderQuantizer(nn.Module):
    """`decoder.quantizer`: codes (B, 16, T) -> (B, codebook_dim, T)."""

    def __init__(self, num_quantizers: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.rvq_first = _DecoderRVQ(1, codebook_size, codebook_dim // 2, codebook_dim)
        self.rvq_rest = _DecoderRVQ(num_quantizers - 1, codebook_size, codebook_dim // 2, codebook_dim)

    def refresh(self):
        for m in self.modules():
            if isinstance(m, _DecoderCodebook):
                m.refresh()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        q = self.rvq_first.decode(codes[:, :1])
        if codes.shape[1] > 1:
            q = q + self.rvq_rest.decode(codes[:, 1:])
        return q


# --------------------------------------------------------------------------- encoder side


class _EncoderCodebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("cluster_usage", torch.ones(size))
        self.register_buffer("embed", torch.zeros(size, dim), persistent=False)

    def refresh(self):
        self.embed.copy_(self.embed_sum / self.cluster_usage.clamp(min=_EPS)[:, None])


class _EncoderVQ(nn.Module):
    def __init__(self, size, dim):
        super().__init__()
        self.codebook = _EncoderCodebook(size, dim)


class _EncoderRVQ(nn.Module):
    def __init__(self, n: int, size: int, dim: int, io_dim: int):
        super().__init__()
        self.input_proj = nn.Conv1d(io_dim, dim, 1, bias=False) if dim != io_dim else None
        self.layers = nn.ModuleList([_EncoderVQ(size, dim) for _ in range(n)])

    def encode(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """x (B, io_dim, T) -> codes (n, B, T)."""
        if self.input_proj is not None:
            x = self.input_proj(x)
        B, D, T = x.shape
        residual = x.transpose(1, 2).reshape(B * T, D)  # (B*T, D)
        out = []
        for layer in self.layers[:n]:
            E = layer.codebook.embed
            idx = torch.cdist(residual[None].float(), E[None].float(), p=2)[0].argmin(dim=-1)  # (B*T,)
            residual = residual - F.embedding(idx, E)
            out.append(idx.view(B, T))
        return torch.stack(out)


class EncoderQuantizer(nn.Module):
    """`encoder.quantizer` (MimiSplitResidualVectorQuantizer)."""

    def __init__(self, cfg):
        super().__init__()
        dim, io = cfg.vq_hidden, cfg.hidden_size
        if dim != cfg.codebook_dim:
            raise ValueError("Mimi quantizer needs vector_quantization_hidden_dimension == codebook_dim")
        self.num_semantic = cfg.num_semantic_quantizers
        self.num_quantizers = cfg.num_quantizers
        self.semantic_residual_vector_quantizer = _EncoderRVQ(self.num_semantic, cfg.codebook_size, dim, io)
        self.acoustic_residual_vector_quantizer = _EncoderRVQ(cfg.num_quantizers - self.num_semantic, cfg.codebook_size, dim, io)

    def refresh(self):
        for m in self.modules():
            if isinstance(m, _EncoderCodebook):
                m.refresh()

    def encode(self, x: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """x (B, hidden, T) -> codes (n, B, T)."""
        n = self.num_quantizers if n is None else n
        codes = self.semantic_residual_vector_quantizer.encode(x, min(n, self.num_semantic))
        if n > self.num_semantic:
            codes = torch.cat([codes, self.acoustic_residual_vector_quantizer.encode(x, n - self.num_semantic)])
        return codes
