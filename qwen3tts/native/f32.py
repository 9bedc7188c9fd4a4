"""`few_rows_linear`: the native float32 product for a few rows (`qwen3tts_linear_f32`, rows.c:
4 weight rows x 4 activation rows of FMAs per pass, the next weight rows prefetched). The codec
decoder's products see a few rows per streaming step (one per frame and stream); they run in
oneDNN with the weight packed once where it is on (native/dnn.py), and here otherwise: the
compute seam's native `gemm` backend (qwen3tts/ops/native_backend.py) calls it."""

from __future__ import annotations

import torch

from . import library

MIN_ROWS, MAX_ROWS = 2, 24  # one row: MKL's matrix-vector product is as fast; from ~32 rows: its blocked GEMM


def few_rows_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, lib=None) -> torch.Tensor | None:
    """x (M, K) @ w (N, K)^T (+ bias (N,)) in the native kernel when it applies (float32 CPU
    tensors, MIN_ROWS <= M <= MAX_ROWS, w and bias contiguous, the library available), else None.
    The compute seam's native `gemm` backend (qwen3tts/ops/native_backend.py) passes the library
    its plan holds (`lib`; None: the one the current options give)."""
    M, K = x.shape
    N = w.shape[0]
    if not (MIN_ROWS <= M <= MAX_ROWS and x.dtype == w.dtype == torch.float32 and x.device.type == w.device.type == "cpu"
            and w.shape[1] == K and w.is_contiguous() and (bias is None or bias.is_contiguous())):
        return None
    if lib is None:
        lib = library()
    if lib is None:
        return None
    xc = x.contiguous()
    y = torch.empty(M, N, dtype=x.dtype)
    b = bias.data_ptr() if bias is not None else None
    lib.qwen3tts_linear_f32(xc.data_ptr(), M, K, w.data_ptr(), b, N, y.data_ptr(), torch.get_num_threads())
    return y
