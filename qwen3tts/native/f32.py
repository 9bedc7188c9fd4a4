"""`FewRowsLinear`: an `nn.Linear` whose float32 CPU products of a few rows run in the native
library (`qwen3tts_linear_f32`, codec.c). Used by the codec decoder (its transformer, ConvNeXt
blocks and projections), which sees a few rows per call (one per frame and stream): MKL's GEMM
for 2..24 rows ran well below the memory bandwidth there (the transformer's 116 MB at 4 rows:
10.2 -> 5.3 ms; 12 rows: 11.0 -> 7.5 ms; at 1 and 32 rows both are alike). Same parameters and state_dict as nn.Linear;
anything else (other dtypes, devices, more rows, no library) goes to F.linear. `few_rows_linear` is
the same product for other callers: the codec's convolutions that run as one GEMM (the k7
convolution into the decoder, the transposed convolutions) see 4..16 rows per streaming step."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import library

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


class FewRowsLinear(nn.Linear):
    @classmethod
    def adopt(cls, lin: nn.Module) -> nn.Module:
        """Turn a plain `nn.Linear` into a FewRowsLinear in place (same parameters); returns it."""
        if type(lin) is nn.Linear:
            lin.__class__ = cls
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = self.in_features
        y = few_rows_linear(x.reshape(-1, K), self.weight, self.bias) if K and x.shape[-1] == K else None
        if y is None:
            return F.linear(x, self.weight, self.bias)
        return y.view(*x.shape[:-1], self.out_features)
