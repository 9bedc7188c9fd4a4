"""`FewRowsLinear`: an `nn.Linear` whose float32 CPU products of a few rows run in the native
library (`qwen3tts_linear_f32`, codec.c). Used by the codec decoder (its transformer, ConvNeXt
blocks and projections), which sees a few rows per call (one per frame and stream): MKL's GEMM
for 2..24 rows ran well below the memory bandwidth there (the transformer's 116 MB at 4 rows:
10.2 -> 5.3 ms; 12 rows: 11.0 -> 7.5 ms; at 1 and 32 rows both are alike). Same parameters and state_dict as nn.Linear;
anything else (other dtypes, devices, more rows, no library) goes to F.linear."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import library

MIN_ROWS, MAX_ROWS = 2, 24  # one row: MKL's matrix-vector product is as fast; from ~32 rows: its blocked GEMM


class FewRowsLinear(nn.Linear):
    @classmethod
    def adopt(cls, lin: nn.Module) -> nn.Module:
        """Turn a plain `nn.Linear` into a FewRowsLinear in place (same parameters); returns it."""
        if type(lin) is nn.Linear:
            lin.__class__ = cls
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        K, N = self.in_features, self.out_features
        M = x.numel() // K if K else 0
        if not (MIN_ROWS <= M <= MAX_ROWS and x.dtype == w.dtype == torch.float32 and x.device.type == "cpu" and w.is_contiguous()
                and (self.bias is None or self.bias.is_contiguous())):
            return F.linear(x, w, self.bias)
        lib = library()
        if lib is None:
            return F.linear(x, w, self.bias)
        xc = x.contiguous()
        y = torch.empty(*x.shape[:-1], N, dtype=x.dtype)
        b = self.bias.data_ptr() if self.bias is not None else None
        lib.qwen3tts_linear_f32(xc.data_ptr(), M, K, w.data_ptr(), b, N, y.data_ptr(), torch.get_num_threads())
        return y
