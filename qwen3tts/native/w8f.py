"""`W8Linear`: a linear with int8 weights (one float32 scale per output row) and float32
activations, computed by the native library (`qwen3tts_linear_w8f`, codec.c: 4 weight rows x 4 activation
rows of FMAs per pass, 4 x 2 under AVX2, the int8 weights converted to float exactly), or by its
torch definition where the library is missing: y = (x @ q^T) * scale (+ bias). The weights are
kept in decode.c's interleaved groups of 4 rows (`stack.pack_rows`, in huge pages where it can
be): a pass over 4 rows reads one sequential stream.

Not in the official model (it has no quantization): the codec decoder's weight-bound products
use it in the quantized modes (qwen3tts/codec_quant.py). Activations are not rounded, so the
product is continuous in its input, and a row's result does not depend on the other rows.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..int8 import quantize_channels
from . import KALIGN_DEFAULT, library
from .stack import pack_rows, unpack_rows


class W8Linear(nn.Module):
    """y = (x @ q^T) * scale (+ bias): int8 weights q (N, K) with a float32 scale per output row,
    float32 activations (no activation rounding)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        w = weight.detach().float().cpu()
        N, K = w.shape
        q, scale = quantize_channels(w)
        self.in_features, self.out_features = K, N
        self.register_buffer("weight_q", pack_rows(q, -(-K // KALIGN_DEFAULT) * KALIGN_DEFAULT))  # (ceil(N / 4), Kp / 64, 4, 64)
        self.register_buffer("scales", scale.float().contiguous())  # (N,)
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lib = library()
        if lib is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return self.reference(x)
        K, N = self.in_features, self.out_features
        x2 = x.reshape(-1, K)  # (M, K)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        y = torch.empty(x2.shape[0], N)
        bufs = self._buffers  # (not through Module.__getattr__: a per-call cost at one row)
        w, s, b = bufs["weight_q"], bufs["scales"], bufs["bias"]
        lib.qwen3tts_linear_w8f(x2.data_ptr(), x2.shape[0], K, w.data_ptr(), w.shape[1] * w.shape[3], s.data_ptr(),
                                None if b is None else b.data_ptr(), N, y.data_ptr(), torch.get_num_threads())
        return y.view(*x.shape[:-1], N)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The definition in torch (the test oracle, and the path without the native library)."""
        w = self.int8_weight().to(x.dtype)
        y = (x @ w.T) * self.scales.to(x.dtype)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (N, K) this linear computes with."""
        return self.int8_weight().float() * self.scales[:, None]

    def int8_weight(self) -> torch.Tensor:
        """The int8 weight (N, K), unpacked (a copy)."""
        return unpack_rows(self.weight_q, self.out_features)[:, : self.in_features]
