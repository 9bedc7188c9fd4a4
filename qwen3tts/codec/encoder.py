"""24 kHz waveform -> codes: `Qwen3TTSTokenizerV2Encoder` (= transformers `MimiModel` without its
decoder parts), offline only (the official package never streams the encoder).

Data flow (codec.md §5):
    wav (B, 1, L) -> SEANet (conv k7; per reversed ratio: ResBlock, ELU, strided conv) ->
    (B, hidden, ceil(L/960)) -> transformer, full causal (B, T25, hidden) ->
    downsample conv k4 s2, replicate padding, no bias (B, hidden, ceil(L/1920)) ->
    split RVQ -> codes (num_quantizers, B, T)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import CausalConv1d
from .quantizer import EncoderQuantizer
from .transformer import EncoderTransformer


class ResnetBlock(nn.Module):
    """MimiResnetBlock: x + conv_k1(ELU(conv_k3(ELU(x)))) (block indices 1 and 3 hold the convs)."""

    def __init__(self, cfg, dim: int, dilations: list[int]):
        super().__init__()
        hidden = dim // cfg.compress
        ks = [cfg.residual_kernel_size, 1]
        block = []
        for i, (k, d) in enumerate(zip(ks, dilations)):
            cin = dim if i == 0 else hidden
            cout = dim if i == len(ks) - 1 else hidden
            block += [nn.ELU(inplace=i > 0), CausalConv1d(cin, cout, k, dilation=d)]  # (in place: not on x, the residual)
        self.block = nn.ModuleList(block)
        self.shortcut = CausalConv1d(dim, dim, 1) if cfg.use_conv_shortcut else None

    def forward(self, x):
        r = x
        for layer in self.block:
            x = layer(x)
        return x + (self.shortcut(r) if self.shortcut is not None else r)


class SEANetEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        layers = [CausalConv1d(cfg.audio_channels, cfg.num_filters, cfg.kernel_size)]
        scale = 1
        for ratio in reversed(cfg.upsampling_ratios):
            dim = scale * cfg.num_filters
            for j in range(cfg.num_residual_layers):
                layers.append(ResnetBlock(cfg, dim, [cfg.dilation_growth_rate**j, 1]))
            layers.append(nn.ELU(inplace=True))  # its input is the block's output, used only here
            layers.append(CausalConv1d(dim, dim * 2, ratio * 2, stride=ratio))
            scale *= 2
        layers.append(nn.ELU(inplace=True))
        layers.append(CausalConv1d(scale * cfg.num_filters, cfg.hidden_size, cfg.last_kernel_size))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class CodecEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.encoder_transformer = EncoderTransformer(cfg)
        s = cfg.downsample_stride
        self.downsample = CausalConv1d(cfg.hidden_size, cfg.hidden_size, 2 * s, stride=s, bias=False, pad_mode="replicate") if s > 1 else None
        self.quantizer = EncoderQuantizer(cfg)
        self.max_quantizers = self.quantizer.num_quantizers  # codebooks kept (`keep_quantizers`)

    def keep_quantizers(self, n: int) -> None:
        """Keep only the codebooks `encode(num_quantizers=n)` reads (semantic first, then
        acoustic); called on an encoder built on the meta device, before loading, so the
        others are never read. `encode` with more than `n` is then an error."""
        q = self.quantizer
        q.semantic_residual_vector_quantizer.layers = q.semantic_residual_vector_quantizer.layers[: min(n, q.num_semantic)]
        q.acoustic_residual_vector_quantizer.layers = q.acoustic_residual_vector_quantizer.layers[: max(0, n - q.num_semantic)]
        self.max_quantizers = n

    def keep_centroids_only(self) -> None:
        """Compute each codebook's centroids (`refresh`) and drop the checkpoint's sums and
        usage counts they are computed from, one codebook at a time (an encoder made for one
        call: its state_dict no longer has them)."""
        for m in self.quantizer.modules():
            if hasattr(m, "embed_sum"):
                m.refresh()
                m._buffers["embed_sum"] = m._buffers["cluster_usage"] = None

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None, taps: dict | None = None) -> torch.Tensor:
        """wav (B, 1, L) -> codes (n, B, T)."""
        if (self.quantizer.num_quantizers if num_quantizers is None else num_quantizers) > self.max_quantizers:
            raise ValueError(f"this encoder keeps {self.max_quantizers} codebooks, not {num_quantizers}")
        h = self.encoder(wav)  # (B, hidden, T25)
        if taps is not None:
            taps["seanet_out"] = h.clone()
        h = self.encoder_transformer(h.transpose(1, 2))  # (B, T25, hidden)
        if taps is not None:
            taps["transformer_out"] = h.clone()
        h = h.transpose(1, 2)
        if self.downsample is not None:
            h = self.downsample(h)  # (B, hidden, T)
        if taps is not None:
            taps["downsample_out"] = h.clone()
        return self.quantizer.encode(h, num_quantizers)
