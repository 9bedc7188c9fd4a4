"""The plan: which backend computes each op, chosen once from the runtime options, the device,
the dtype and what is available, when a model is loaded.

`BACKENDS` is the registry, in order of preference: for each op the plan keeps the available
backends that implement it, in this order (its chain). At run time a backend may decline
operands it does not serve (a shape, a layout, a module without the weight it keeps: it returns
None) and the next one in the chain computes them; the torch backend, last, serves everything except the optional ops. Adding a
backend is one file (NAME, `available(opts, device, dtype)`, `OPS = {op: function}`) and one
line here.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

import torch

from .. import options
from . import gemm_conv_backend, native_backend, onednn_backend, torch_backend, triton_backend, w8f_backend, window_backend, winograd_backend

BACKENDS = (
    window_backend,  # window_stack: the codec transformer's pass in one native call, int8 weights (w8f), float32 CPU
    w8f_backend,  # gemm, conv1d (+ streaming form): products whose weight is kept in int8 (ops.keep_int8), float32 CPU
    winograd_backend,  # conv1d (+ its streaming form): F(4, 7) for wide k7 convolutions; conv_transpose1d: F(4, 2); float32 CPU
    onednn_backend,  # linear, gemm: oneDNN float32 CPU products
    native_backend,  # gemm (2..24 rows), snake, depthwise conv1d, overlap_add: the native C library, float32 CPU
    triton_backend,  # rms_norm, rope: Triton kernels (CUDA)
    gemm_conv_backend,  # conv1d: one GEMM over the unfolded windows, through the plan's gemm chain
    torch_backend,  # everything: plain torch
)
OPS = ("linear", "gemm", "conv1d", "conv1d_history", "conv_transpose1d", "overlap_add", "snake", "rms_norm", "rope", "attention",
       "window_stack")
OPTIONAL = ("conv1d_history", "conv_transpose1d", "overlap_add", "window_stack")  # an op no backend may serve (the caller then computes it another way)
# Ops computed by whole modules that replace the float ones when a model is quantized (quant.py):
# the plan names the backend (`MODULES` of a backend), quant.py builds its module.
# w8a8_linear: native (native/stack.py NativeW8A8Linear) > torch (quant.W8A8Linear, fbgemm);
# decoder_stack_step: native (NativeStack: a whole stack's decode step in C, on the
# `Transformer.native` hook) > torch (the Python layers: its reference).
MODULE_OPS = ("w8a8_linear", "decoder_stack_step")

log = logging.getLogger("qwen3tts.ops")


@dataclass(frozen=True, eq=False)
class Plan:
    """For each op, the chain of backend names and their functions; `lib`: the native library
    when the native backend is in the plan."""

    device: torch.device
    dtype: torch.dtype
    chains: Mapping[str, tuple[str, ...]]
    fns: Mapping[str, tuple[Callable, ...]] = field(repr=False)
    lib: object = field(default=None, repr=False)
    float_leads: Mapping[str, str] = field(default_factory=dict, repr=False)
    # A backend's answer that ends the chain with None (`plan.STOP`): an optional op for a module
    # whose weight only that backend holds (w8f's int8 weights), which the backends after it
    # cannot read; the caller then computes it another way, through ops that backend serves.
    STOP: ClassVar[object] = object()

    def chain(self, op: str) -> tuple[str, ...]:
        return self.chains[op]

    def leads(self, op: str) -> str:
        """The backend that computes `op` for weights given as they are: the first of its chain
        but those that serve only weights they keep in a form of their own (`OWN_WEIGHTS`: w8f)."""
        return self.float_leads.get(op, "")

    def run(self, op: str, *args):
        """`op` by the first backend of the chain that serves these operands (None only for an
        optional op no backend serves, or one a backend ends with `STOP`)."""
        for fn in self.fns[op]:
            y = fn(self, *args)
            if y is not None:
                return None if y is self.STOP else y
        return None

    def describe(self) -> str:
        """One line: `op: backend > backend; ...` (and the native library's instruction set)."""
        line = "; ".join(f"{op}: {' > '.join(c) or '-'}" for op, c in self.chains.items())
        if self.lib is not None:
            from .. import native

            line += f"; native isa: {native.isa(self.lib)}"
        return line


_plans: dict = {}
_lock = threading.Lock()


def make(opts: options.RuntimeOptions | None = None, device="cpu", dtype: torch.dtype = torch.float32) -> Plan:
    """The plan for a model on `device` in `dtype` under `opts` (default: the current options),
    made once per distinct (options, device, dtype) and logged when made."""
    opts = options.current() if opts is None else opts
    device = torch.device(device)
    key = (opts, device, dtype)
    p = _plans.get(key)
    if p is not None:
        return p
    with _lock:
        if key not in _plans:
            _plans[key] = p = _choose(opts, device, dtype)
            log.info("ops plan for %s %s: %s", device, str(dtype).replace("torch.", ""), p.describe())
        return _plans[key]


def _choose(opts, device, dtype) -> Plan:
    avail = [b for b in BACKENDS if b.available(opts, device, dtype)]
    chains, fns, leads = {}, {}, {}
    for op in OPS:
        bs = [b for b in avail if op in b.OPS]
        chains[op] = tuple(b.NAME for b in bs)
        fns[op] = tuple(b.OPS[op] for b in bs)
        leads[op] = next((b.NAME for b in bs if not getattr(b, "OWN_WEIGHTS", False)), "")
    for op in MODULE_OPS:
        chains[op] = tuple(b.NAME for b in avail if op in getattr(b, "MODULES", ()))
    lib = native_backend.library(opts) if native_backend in avail else None
    return Plan(device, dtype, chains, fns, lib, leads)


def default() -> Plan:
    """The plan of a module that was not bound at load (built on its own, e.g. in a test):
    float32 on CPU under the current options; backends still decline operands they do not serve."""
    return make(options.current(), "cpu", torch.float32)
