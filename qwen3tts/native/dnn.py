"""oneDNN float32 matrix products on CPU: with pre-packed weights for the codec decoder, on the
weights as they are for the talker, code predictor and codec encoder (the compute seam's
oneDNN backend, qwen3tts/ops/onednn_backend.py, calls these).

Not in the official model: the same products, computed by the oneDNN (MKL-DNN) library that
ships inside the torch CPU wheel (`torch.ops.mkldnn._linear_pointwise`, the op torch's inductor
uses for CPU linears), with each weight re-laid once into oneDNN's blocked format
(`_reorder_linear_weight`) and kept. On the 2-core AVX-512 machine of docs/benchmarks.md they
run at 330-490 GFLOPS from ~32 rows on, 2-4x the MKL `sgemm` behind `torch.mm` / `torch.bmm`
(100-200 GFLOPS for the codec's shapes).

Only the matmul primitive: one packed weight serves every row count (measured: 48 to 2048 rows
all within ~10 % of a weight packed for that count). oneDNN's *convolution* primitive does not
have that property: its packed layout depends on the input length, and a weight packed for
another length ran at 1-50 GFLOPS (a per-call re-layout), so convolutions are run as products
over their (unfolded) inputs instead.

Used by the codec decoder for all its float32 products, streaming steps of a few rows included
(packed weights stream at 34-39 GB/s there, the native few-row kernel of native/f32.py at 23-32,
which now serves only when oneDNN is off): the 1x1 and GEMM-sized convolutions, the channel
mixes of the wide Winograd k7 convolutions, the transposed convolutions and the linears.

`QWEN3TTS_ONEDNN=0` switches it off (torch's kernels: MKL GEMMs), for comparisons; it is also
off where torch was built without oneDNN. Float32 sums in another order than MKL's: results
agree to rounding (tests/test_dnn.py).
"""

from __future__ import annotations

import warnings

import torch

from .. import options


def enabled() -> bool:
    """oneDNN products on (default) unless `QWEN3TTS_ONEDNN=0` (options), or torch lacks oneDNN."""
    return options.current().onednn and _have_ops()


def _have_ops() -> bool:
    if not hasattr(_have_ops, "ok"):
        ops = getattr(torch.ops, "mkldnn", None)
        _have_ops.ok = bool(torch.backends.mkldnn.is_available() and ops is not None
                            and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))
    return _have_ops.ok


def applies(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Float32 CPU operands and oneDNN on."""
    return x.dtype == w.dtype == torch.float32 and x.device.type == w.device.type == "cpu" and enabled()


class PackedLinear:
    """A weight (N, K) re-laid once for oneDNN's matmul; `self(x (M, K), bias)` is
    x @ w^T (+ bias): (M, N), contiguous."""

    def __init__(self, w: torch.Tensor, rows_hint: int = 256):
        if w.dim() != 2:
            raise ValueError(f"a packed linear weight is (N, K), got {tuple(w.shape)}")
        self.shape = tuple(w.shape)
        self.w = torch.ops.mkldnn._reorder_linear_weight(w.detach().contiguous(), rows_hint)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.shape[1]:
            raise ValueError(f"packed linear of weight {self.shape} got input {tuple(x.shape)}")
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.w, bias, "none", [], "")


def cached(owner, slot: str, source: torch.Tensor, build) -> PackedLinear:
    """`build()` cached in `owner.__dict__[slot]` while `source` (the parameter it is made from)
    is unchanged (same storage, same in-place version)."""
    try:
        version = source._version
    except RuntimeError:  # inference-mode tensors have no version counter
        version = -1
    key = (version, source.data_ptr(), tuple(source.shape))
    c = owner.__dict__.get(slot)
    if c is None or c[0] != key:
        owner.__dict__[slot] = c = (key, build())
    return c[1]


def linear(owner, slot: str, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """x (M, K) @ w (N, K)^T (+ bias) through oneDNN with `w` packed once (cached on `owner`
    under `slot`), or None where oneDNN does not apply (then the caller uses torch). A torch
    whose oneDNN ops exist but fail (a platform without these kernels) switches it off for the
    process, with one warning."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1] or not applies(x, w):
        return None
    try:
        return cached(owner, slot, w, lambda: PackedLinear(w, max(x.shape[0], 32)))(x, bias)
    except (RuntimeError, NotImplementedError) as e:
        _switch_off(e)
        return None


def _switch_off(e: Exception) -> None:
    """oneDNN's ops exist but fail here: off for the process, one warning."""
    _have_ops.ok = False
    warnings.warn(f"oneDNN products unavailable ({e}); using torch's kernels (slower)", RuntimeWarning, stacklevel=3)
