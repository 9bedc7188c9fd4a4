"""`FewRowsLinear`: an `nn.Linear` for the codec decoder's float32 CPU products (its transformer,
ConvNeXt blocks and projections), which see a few rows per call (one per frame and stream).
They run in oneDNN with the weight packed once (native/dnn.py: it streams few-row weights at
several times MKL's rate, docs/benchmarks.md); without oneDNN, 2..24 rows run in the native
library (`qwen3tts_linear_f32`, codec.c: 4 weight rows x 4 activation rows of FMAs per pass,
the next weight rows prefetched). Same parameters and state_dict as nn.Linear; anything
else (other dtypes, devices, no library) goes to F.linear. `few_rows_linear` is the native
product for other callers: the codec's convolutions that run as one GEMM (the k7 convolution
into the decoder, the transposed convolutions) see 4..16 rows per streaming step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dnn, library

MIN_ROWS, MAX_ROWS = 2, 24  # one row: MKL's matrix-vector product is as fast; from ~32 rows: its blocked GEMM


def few_rows_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """x (M, K) @ w (N, K)^T (+ bias (N,)) in the native kernel when it applies (float32 CPU
    tensors, MIN_ROWS <= M <= MAX_ROWS, w and bias contiguous, the library available), else None.
    Shared by `FewRowsLinear` and the codec's convolutions run as one GEMM (codec/layers.py)."""
    M, K = x.shape
    N = w.shape[0]
    if not (MIN_ROWS <= M <= MAX_ROWS and x.dtype == w.dtype == torch.float32 and x.device.type == w.device.type == "cpu"
            and w.shape[1] == K and w.is_contiguous() and (bias is None or bias.is_contiguous())):
        return None
    lib = library()
    if lib is None:
        return None
    xc = x.contiguous()
    y = torch.empty(M, N, dtype=x.dtype)
    b = bias.data_ptr() if bias is not None else None
    lib.qwen3tts_linear_f32(xc.data_ptr(), M, K, w.data_ptr(), b, N, y.data_ptr(), torch.get_num_threads())
    return y


class FewRowsLinear(dnn.AdoptableLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = self.in_features
        x2 = x.reshape(-1, K) if K and x.shape[-1] == K else None
        y = dnn.linear(self, "_dnn", x2, self.weight, self.bias) if x2 is not None else None  # oneDNN, packed once
        if y is None and x2 is not None:
            y = few_rows_linear(x2, self.weight, self.bias)  # without oneDNN: the native kernel for a few rows
        if y is None:
            return F.linear(x, self.weight, self.bias)
        return y.view(*x.shape[:-1], self.out_features)
