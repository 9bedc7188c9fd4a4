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

`QWEN3TTS_ONEDNN=0` switches it off (torch's kernels: MKL GEMMs) for models loaded after it is
set (the compute plan reads it once, at load), for comparisons; it is also off where torch was
built without oneDNN. Float32 sums in another order than MKL's: results
agree to rounding (tests/test_dnn.py).
"""

from __future__ import annotations

import warnings
import weakref

import torch
import torch.nn as nn

from .. import options


def enabled() -> bool:
    """Would a plan made now under the current options use oneDNN: on (default) unless
    `QWEN3TTS_ONEDNN=0`, and torch has working oneDNN ops. (A loaded model's products follow its
    plan, chosen at load: ops/onednn_backend.py `available`.)"""
    return options.current().onednn and _have_ops()


def _have_ops() -> bool:
    if not hasattr(_have_ops, "ok"):
        ops = getattr(torch.ops, "mkldnn", None)
        _have_ops.ok = bool(torch.backends.mkldnn.is_available() and ops is not None
                            and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))
    return _have_ops.ok


def applies(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Float32 CPU operands (`w` may be the stand-in of a packed-only weight) and oneDNN's ops
    working. Whether oneDNN computes a model's products at all is decided once, when its plan is
    made (the option is not read here)."""
    return (x.dtype == w.dtype == torch.float32 and x.device.type == "cpu" and (w.device.type == "cpu" or w.is_meta)
            and _have_ops())


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
    c = owner.__dict__.get(slot)
    if source.is_meta:  # a packed-only weight (`pack_only`): the packed copy is all there is
        if c is None or c[0][2] != tuple(source.shape):
            raise RuntimeError(f"{type(owner).__name__}.{slot}: a packed-only weight without its packed copy")
        return c[1]
    key = (version, source.data_ptr(), tuple(source.shape))
    if c is None or c[0] != key:
        owner.__dict__[slot] = c = (key, build())
    return c[1]


# Modules whose weight lives only in its packed copy (`pack_only`).
_PACKED_ONLY: "weakref.WeakSet" = weakref.WeakSet()


def pack_only(owner, param_owner: nn.Module, view=lambda w: w, name: str = "weight", rows_hint: int = 32) -> int:
    """Pack `view(param_owner.<name>)` (the 2-D view (N, K) that `owner` passes to `linear`
    under slot "_dnn") and keep only the packed copy: the parameter becomes a stand-in with its
    shape, strides and dtype but no storage (the meta device). Returns the bytes freed.

    The weight stays readable: `state_dict()` holds it rebuilt from the packed copy (exact:
    oneDNN's reorder back), and where oneDNN's ops fail (`_switch_off`) every packed-only
    weight is rebuilt in place, so the other kernels find it. Reading the
    stand-in itself (e.g. `param_owner.weight` in other code) gives a tensor without data."""
    w = getattr(param_owner, name)
    v = view(w)
    if v.dim() != 2 or v.data_ptr() != w.data_ptr() or v.numel() != w.numel():
        raise ValueError("pack_only needs a 2-D view of the whole weight")
    packed = PackedLinear(v, rows_hint)
    stand = nn.Parameter(torch.empty_strided(w.shape, w.stride(), dtype=w.dtype, device="meta"), requires_grad=False)
    param_owner._parameters[name] = stand
    owner.__dict__["_dnn"] = ((-1, 0, tuple(v.shape)), packed)
    owner.__dict__["_dnn_source"] = (param_owner, name, view)
    if "_dnn_state_hook" not in param_owner.__dict__:
        param_owner.__dict__["_dnn_state_hook"] = param_owner._register_state_dict_hook(_rebuilt_in_state_dict)
    param_owner.__dict__.setdefault("_dnn_packed_by", {})[name] = weakref.ref(owner)
    _PACKED_ONLY.add(owner)
    return w.numel() * w.element_size()


def _rebuild(owner) -> torch.Tensor:
    """The float weight of a packed-only `owner`, rebuilt from its packed copy (exact)."""
    param_owner, name, view = owner.__dict__["_dnn_source"]
    stand = param_owner._parameters[name]
    t = torch.empty_strided(stand.shape, stand.stride(), dtype=stand.dtype)
    v = view(t)
    if v.data_ptr() != t.data_ptr():
        raise RuntimeError(f"{type(owner).__name__}: the packed-only weight's layout was changed")
    v.copy_(owner.__dict__["_dnn"][1].w.to_dense())
    return t


def _rebuilt_in_state_dict(module, state_dict, prefix, local_metadata):
    for name, ref in module.__dict__.get("_dnn_packed_by", {}).items():
        owner, p = ref(), module._parameters.get(name)
        if owner is not None and p is not None and p.is_meta and "_dnn_source" in owner.__dict__:
            state_dict[prefix + name] = _rebuild(owner)
    return state_dict


def restore(owner) -> None:
    """Rebuild `owner`'s packed-only weight in place (a float parameter again); no-op otherwise."""
    src = owner.__dict__.get("_dnn_source")
    if src is None:
        return
    param_owner, name, _ = src
    if param_owner._parameters[name].is_meta:
        param_owner._parameters[name] = nn.Parameter(_rebuild(owner), requires_grad=False)
    del owner.__dict__["_dnn_source"]  # the packed copy stays, for a stand-in read before (`linear`)
    _PACKED_ONLY.discard(owner)


def restore_all() -> None:
    """Rebuild every packed-only weight in place (oneDNN went off: the other kernels read it)."""
    for owner in list(_PACKED_ONLY):
        restore(owner)


def linear(owner, slot: str, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """x (M, K) @ w (N, K)^T (+ bias) through oneDNN with `w` packed once (cached on `owner`
    under `slot`), or None where oneDNN does not apply (then the caller uses torch). A torch
    whose oneDNN ops exist but fail (a platform without these kernels) switches it off for the
    process, with one warning."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        return None
    if not applies(x, w):
        if w.is_meta:  # a stand-in read before oneDNN went off (the weights are restored now)
            dense = owner.__dict__[slot][1].w.to_dense().to(x.dtype)
            return torch.addmm(bias.to(x.dtype), x, dense.T) if bias is not None else x @ dense.T
        return None
    try:
        return cached(owner, slot, w, lambda: PackedLinear(w, max(x.shape[0], 32)))(x, bias)
    except (RuntimeError, NotImplementedError) as e:
        _switch_off(e)
        return None


def _switch_off(e: Exception) -> None:
    """oneDNN's ops exist but fail here: off for the process, one warning."""
    _have_ops.ok = False
    restore_all()
    warnings.warn(f"oneDNN products unavailable ({e}); using torch's kernels (slower)", RuntimeWarning, stacklevel=3)
