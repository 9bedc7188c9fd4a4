"""The common base of the native library's quantized linears (stack.py's `NativeW8A8Linear`,
q4.py's `NativeW4A8Linear`): each holds its weights in the layout its kernels stream and a `Lin`
descriptor of them (`desc`); the product of any row count is one `qwen3tts_linear` call, which
dispatches on the descriptor (8- or 4-bit weights). `NativeStack` runs stacks of either."""

from __future__ import annotations

import ctypes

import torch
import torch.nn as nn


class NativeLinear(nn.Module):
    """y = x W^T (+ b) through the native library; subclasses set `lib`, `in_features`,
    `out_features` and `desc` (a `Lin`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, self.in_features).float().contiguous()  # (M, K)
        y = torch.empty(x2.shape[0], self.out_features)
        self.lib.qwen3tts_linear(ctypes.byref(self.desc), x2.data_ptr(), x2.shape[0], y.data_ptr(), torch.get_num_threads())
        return y.reshape(*shape[:-1], self.out_features).to(dtype)
