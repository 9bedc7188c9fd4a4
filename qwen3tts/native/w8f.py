"""`W8Weight`: a weight with int8 values (one float32 scale per output row) for products with
float32 activations, computed by the native library (`qwen3tts_linear_w8f`, rows.c: 4 weight
rows x 4 activation rows of FMAs per pass, 4 x 2 under AVX2, the int8 weights converted to float
exactly), or by its torch definition where the library is missing: y = (x @ q^T) * scale (+ bias).
The weights are kept in decode.c's interleaved groups of 4 rows (`stack.pack_rows`, in huge
pages where it can be): a pass over 4 rows reads one sequential stream.

`W16Weight`: int16 values (`qwen3tts_linear_w16f`, in panels of 16 output columns), for the
quantized codec's Winograd channel mixes: their transformed weights pass through the output
transform, which amplifies a rounding of the weights about ninefold, so int8 would be too coarse
there.

Not in the official model (it has no quantization): the compute seam's w8f backend
(qwen3tts/ops/w8f_backend.py) keeps one per codec-decoder product that codec_quant.py gives int8
(int16) weights in the quantized modes. Activations are not rounded, so the product is
continuous in its input, and a row's result does not depend on the other rows.
"""

from __future__ import annotations

import ctypes

import torch

from ..int8 import quantize_channels
from . import KALIGN_DEFAULT, hugepages
from .stack import pack_rows, unpack_rows


class _IntWeight:
    """Integer weights (N, K) with a float32 scale per output row; `self(x, bias, lib)` is
    (x @ q^T) * scale (+ bias) for float32 activations x (..., K) (no activation rounding). A
    subclass keeps its layout and names its native product (`_native`) and its unpacking."""

    __slots__ = ("in_features", "out_features", "scales")

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features): the weight's shape, as a linear layer's."""
        return self.out_features, self.in_features

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None, lib=None) -> torch.Tensor:
        """The product on the native library `lib` (None: the torch definition)."""
        if lib is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return self.reference(x, bias)
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        y = torch.empty(x2.shape[0], self.out_features)
        self._native(lib, x2, None if bias is None else bias.data_ptr(), y)
        return y.view(*x.shape[:-1], self.out_features)

    def reference(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The definition in torch (the test oracle, and the path without the native library)."""
        y = (x @ self.int_weight().to(x.dtype).T) * self.scales.to(x.dtype)
        return y + bias.to(x.dtype) if bias is not None else y

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (N, K) this product computes with."""
        return self.int_weight().float() * self.scales[:, None]


class W8Weight(_IntWeight):
    """int8 weights (scale max|w| / 127 per output row) in decode.c's interleaved groups of 4 rows."""

    __slots__ = ("weight_q", "ld")

    def __init__(self, weight: torch.Tensor):
        w = weight.detach().float().cpu()
        N, K = w.shape
        q, scale = quantize_channels(w)
        self.in_features, self.out_features = K, N
        self.weight_q = pack_rows(q, -(-K // KALIGN_DEFAULT) * KALIGN_DEFAULT)  # (ceil(N / 4), Kp / 64, 4, 64)
        self.scales = scale.float().contiguous()  # (N,)
        self.ld = self.weight_q.shape[1] * self.weight_q.shape[3]  # Kp: bytes per packed row

    def _native(self, lib, x2: torch.Tensor, bias_ptr, y: torch.Tensor) -> None:
        lib.qwen3tts_linear_w8f(x2.data_ptr(), x2.shape[0], self.in_features, self.weight_q.data_ptr(), self.ld,
                                self.scales.data_ptr(), bias_ptr, self.out_features, y.data_ptr(), torch.get_num_threads())

    def int_weight(self) -> torch.Tensor:
        """The int8 weight (N, K), unpacked (a copy)."""
        return unpack_rows(self.weight_q, self.out_features)[:, : self.in_features]


class W16Weight(_IntWeight):
    """int16 weights (scale max|w| / 32767 per output row) in panels of 16 output columns, k
    major: `qwen3tts_linear_w16f` (rows.c) converts a panel to float once and multiplies it by
    blocks of activation rows."""

    __slots__ = ("panels", "_ptrs")
    NR = 16  # rows.c W16_NR: output columns per panel

    def __init__(self, weight: torch.Tensor):
        w = weight.detach().float().cpu()
        N, K = w.shape
        q, scale = quantize_channels(w, torch.int16)
        self.scales = scale.contiguous()  # (N,)
        P = -(-N // self.NR)
        qp = torch.zeros(P * self.NR, K, dtype=torch.int16)
        qp[:N] = q
        self.panels = hugepages.weight((P, K, self.NR), torch.int16).copy_(qp.view(P, self.NR, K).transpose(1, 2))  # (P, K, 16)
        self.in_features, self.out_features = K, N
        self._ptrs = ((ctypes.c_void_p * 1)(self.panels.data_ptr()), (ctypes.c_void_p * 1)(self.scales.data_ptr()))  # the call's arrays

    def _native(self, lib, x2: torch.Tensor, bias_ptr, y: torch.Tensor) -> None:
        _w16f(lib, 1, x2, 0, x2.shape[0], *self._ptrs, bias_ptr, self.out_features, y, 0)

    def int_weight(self) -> torch.Tensor:
        """The int16 weight (N, K), unpacked (a copy)."""
        P, K, R = self.panels.shape
        return self.panels.transpose(1, 2).reshape(P * R, K)[: self.out_features].clone()


class W16Batch:
    """n `W16Weight`s of one shape (N, K) multiplied at once, one native call: `self(x, lib)` is
    y (n, M, N) with y[i] = x[i] @ q_i^T * scale_i for x (n, M, K) float32 (the Winograd channel
    mixes of a convolution); the same sums as n separate products."""

    __slots__ = ("weights", "_q", "_s")

    def __init__(self, weights: list[W16Weight]):
        if len({w.shape for w in weights}) != 1:
            raise ValueError("W16Batch: the weights must share one shape")
        self.weights = list(weights)
        self._q = (ctypes.c_void_p * len(weights))(*(w.panels.data_ptr() for w in weights))
        self._s = (ctypes.c_void_p * len(weights))(*(w.scales.data_ptr() for w in weights))

    def __call__(self, x: torch.Tensor, lib=None) -> torch.Tensor:
        n, (N, K) = len(self.weights), self.weights[0].shape
        if x.dim() != 3 or x.shape[0] != n or x.shape[2] != K:
            raise ValueError(f"W16Batch: input {tuple(x.shape)} does not fit {n} x ({N}, {K})")
        if lib is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return torch.stack([w.reference(v) for w, v in zip(self.weights, x)])
        x = x.contiguous()
        M = x.shape[1]
        y = torch.empty(n, M, N)
        _w16f(lib, n, x, M * K, M, self._q, self._s, None, N, y, M * N)
        return y


def _w16f(lib, n: int, x: torch.Tensor, sx: int, M: int, q, s, bias_ptr, N: int, y: torch.Tensor, sy: int) -> None:
    """`qwen3tts_linear_w16f` on n products of M rows (x_i at i * sx floats, y_i at i * sy; q, s:
    the n weights' panel and scale pointers)."""
    if lib.qwen3tts_linear_w16f(n, x.data_ptr(), sx, M, x.shape[-1], q, s, bias_ptr, N, y.data_ptr(), sy, torch.get_num_threads()):
        raise MemoryError("qwen3tts_linear_w16f: the native kernel could not allocate its buffers")
