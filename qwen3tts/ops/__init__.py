"""The compute seam: every linear product, convolution, attention, RMSNorm, RoPE and SnakeBeta
of the model and the codec goes through these functions. Not in the official model (there each
module calls torch): the same semantics (ops/reference.py, the test oracle), computed by the
backend the module's plan names.

A plan (ops/plan.py) is chosen once, when a model is loaded (`prepare(root)`: from the runtime
options, the model's device and dtype, and what is available), logged in one line, and bound to
every module under `root`; a module built on its own uses `plan.default()`. Each function
takes the calling module first (`owner`): its plan, and where a backend caches a re-laid
weight (oneDNN's packed copy, Winograd's transformed weight) or keeps a weight of its own form
(w8f's int8 weight, given by `keep_int8` in the quantized modes).

Ops: `linear` (weights as they are: talker, code predictor, codec encoder), `gemm` (2-D
products whose weights may be packed once: the codec decoder's linears and convolutions),
`conv1d` (valid convolution; Winograd F(4, 7) / one GEMM / torch), `conv1d_history` (a
streaming step reading its history in place; optional), `conv_transpose1d` (the output
blocks of a transposed convolution, k <= 2 stride, by Winograd F(4, 2); optional),
`overlap_add` (a transposed convolution's output from its product, in one pass; optional), `snake`, `rms_norm`, `rope`,
`attention`, `window_stack` (the codec decoder transformer for one pass; optional); and two
module ops of the quantized talker whose backend the plan names and
quant.py builds: `w8a8_linear`, `decoder_stack_step` (plan.MODULE_OPS). See
docs/architecture.md "Compute seam".
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .derived import version
from .plan import BACKENDS, OPS, Plan, default, make
from .reference import rope_tables

__all__ = ["BACKENDS", "OPS", "Plan", "Linear", "make", "default", "prepare", "bind", "plan_of", "keep_packed_only", "keep_int8", "keep_int16_transformed",
           "rope_tables", "run", "linear", "gemm", "conv1d", "conv1d_history", "conv_transpose1d", "overlap_add", "snake", "rms_norm", "rope",
           "attention", "window_stack", "version"]


def plan_of(owner) -> Plan:
    """The plan bound to `owner` at load, else the default plan."""
    return owner.__dict__.get("ops_plan") or default()


def run(plan: Plan, op: str, *args):
    """`plan.run(op, *args)`."""
    return plan.run(op, *args)


def bind(root: nn.Module, plan: Plan, packed: bool = False) -> None:
    """Bind `plan` to every module under `root`; `packed`: its `Linear`s compute as `gemm`
    (a packed weight copy allowed: the codec decoder) instead of `linear`."""
    for m in root.modules():
        m.__dict__["ops_plan"] = plan
        if isinstance(m, Linear):
            m.__dict__["ops_packed"] = packed


def prepare(root: nn.Module, packed: bool = False, opts=None) -> Plan:
    """Choose the plan for `root` (its parameters' device and dtype, the current options unless
    `opts`) and bind it; the choice is logged once per distinct plan."""
    p = next((t for t in root.parameters() if t.is_floating_point()), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    plan = make(opts, device, dtype)
    bind(root, plan, packed)
    return plan


def keep_packed_only(root: nn.Module, plan: Plan) -> int:
    """Where the plan's `gemm` chain starts with oneDNN: keep the weights that modules under
    `root` pass to `gemm` only in the packed copy (no float twin; native/dnn.py `pack_only`:
    state_dict rebuilds them exactly, oneDNN failing rebuilds them in place). A module names
    those weights by `gemm_weights()`: (parameter owner, the 2-D view it passes) pairs.
    Returns the bytes freed."""
    if plan.leads("gemm") != "onednn":
        return 0
    from ..native import dnn

    n = 0
    for m in root.modules():
        for owner, view in getattr(m, "gemm_weights", lambda: ())():
            n += dnn.pack_only(m, owner, view)
    return n


def keep_int8(owner: nn.Module, param_owner: nn.Module, view=lambda w: w) -> int:
    """Where `owner`'s plan has the w8f backend: `owner`'s products (`gemm`, `conv1d`) compute
    with int8 weights from now on (w8f_backend.keep: `view(param_owner.weight)`, the 2-D matrix
    they multiply by, quantized once per output row); the float weight and any packed copy of it
    are dropped (a packed-only weight is rebuilt from its copy first). Returns the weights
    converted (0 where the plan has no w8f backend, or where already done)."""
    if "w8f" not in plan_of(owner).chain("gemm"):
        return 0
    from . import w8f_backend

    if param_owner.weight.is_meta and w8f_backend.SLOT not in owner.__dict__:  # packed only (oneDNN): rebuilt first
        from ..native import dnn

        dnn.restore(owner)
    n = w8f_backend.keep(owner, param_owner, view)
    if n:
        for slot in ("_dnn", "_dnn_source", "_winograd"):  # the float weight's re-laid copies
            owner.__dict__.pop(slot, None)
    return n


def keep_int16_transformed(owner: nn.Module, param_owner: nn.Module) -> int:
    """Where `owner`'s plan computes its convolution by the unfused Winograd F(4, 7) (a wide k7
    layer): from now on only its transformed weight is kept, rounded to int16 per output channel
    of each mix (winograd_backend.keep_int16), and the float weight is dropped. Returns the
    weights converted (0 where it does not apply, or where already done)."""
    from . import winograd_backend

    return winograd_backend.keep_int16(plan_of(owner), owner, param_owner)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state_dict) whose product goes through the seam: `linear`,
    or `gemm` where bound as packed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.__dict__
        plan = d.get("ops_plan") or default()
        if not d.get("ops_packed"):
            return plan.run("linear", self, x, self.weight, self.bias)
        K = self.in_features
        y = plan.run("gemm", self, x.reshape(-1, K), self.weight, self.bias)  # (M, N)
        return y.view(*x.shape[:-1], self.out_features)

    def gemm_weights(self):
        """The weight this module passes to `gemm` (bound as packed): itself."""
        return [(self, lambda w: w)] if self.__dict__.get("ops_packed") else []


def linear(owner, x, w, bias=None):
    return plan_of(owner).run("linear", owner, x, w, bias)


def gemm(owner, x, w, bias=None):
    """x (M, K) @ w (N, K)^T (+ bias): (M, N); `w` may be packed once and cached on `owner`."""
    return plan_of(owner).run("gemm", owner, x, w, bias)


def conv1d(owner, x, w, bias, stride=1, dilation=1, groups=1, cl=False):
    """Valid convolution of x (B, Cin, L) with w (Cout, Cin / groups, k); `cl`: a channels-last
    layer (weight (Cout, k, Cin) in memory, output a (B, Cout, T) view of (B, T, Cout))."""
    return plan_of(owner).run("conv1d", owner, x, w, bias, stride, dilation, groups, cl)


def conv1d_history(owner, x, history, w, bias, dilation=1, groups=1, epilogue=None):
    """Valid stride-1 convolution of [history (B, P, Cin), contiguous; x (B, Cin, N)] reading
    the history in place, or None where no backend serves it (the caller concatenates).
    `epilogue` (res (B, T, Cout), alpha2, inv_beta2, the 1x1 layer, its weight (Cout, Cin, 1),
    b2): return res + conv2(snake2(conv)) instead (a residual unit's rest), or None where not
    served."""
    return plan_of(owner).run("conv1d_history", owner, x, history, w, bias, dilation, groups, epilogue)


def conv_transpose1d(owner, x, w, bias, stride):
    """The output blocks of a transposed convolution (k <= 2 stride) of x (B, Cin, N) with w
    (Cin, Cout, k): (B, N + 1, stride * Cout), block t = the samples t * stride.. with the
    overlap-add within x done, bias added, block N what spills into the next chunk; or None
    where no backend serves it (the caller computes one GEMM and the overlap-add)."""
    return plan_of(owner).run("conv_transpose1d", owner, x, w, bias, stride)


def overlap_add(owner, z, tail, bias, stride):
    """A channels-last transposed convolution's output (k <= 2 stride) from its product z
    (B, N, k, Cout), contiguous: (B, Cout, N * stride) over (B, N * stride, Cout) memory, sample
    t * stride + j = z[t, j] (+ z[t - 1, stride + j] for j < k - stride, the previous chunk's
    spill `tail` (B, k - stride, Cout) for t = 0) + bias; `tail` then holds this chunk's spill.
    None where no backend serves it (nothing changed: the caller computes it in torch)."""
    return plan_of(owner).run("overlap_add", z, tail, bias, stride)


def snake(owner, x, alpha, inv_beta):
    return plan_of(owner).run("snake", x, alpha, inv_beta)


def rms_norm(owner, x, weight, eps: float):
    return plan_of(owner).run("rms_norm", x, weight, eps)


def rope(owner, x, cos, sin):
    return plan_of(owner).run("rope", x, cos, sin)


def attention(owner, q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    return plan_of(owner).run("attention", q, k, v, attn_mask, is_causal, enable_gqa)


def window_stack(owner, x, pos, rings, rope):
    """A codec decoder transformer `owner` (codec/transformer.py) for one pass of N <= its ring
    chunk frames: x (B, N, latent) -> (B, N, latent); pos: the rows' first positions (an int or B
    ints); rings: per layer its (B, Hkv, R, D) key / value ring (written at the new positions);
    rope(): the pass's RoPE rows cos, sin (1 or B, N, D), called only where served. None where no
    backend serves it (the caller runs its modules)."""
    return plan_of(owner).run("window_stack", owner, x, pos, rings, rope)
