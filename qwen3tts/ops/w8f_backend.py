"""The w8f backend: products whose weight is kept as int8 values (one float32 scale per output
row) with float32 activations (native/w8f.py `W8Weight`: the native library's
`qwen3tts_linear_w8f`, its torch definition where the plan has no native library).

It serves `gemm`, `conv1d` (one product over the unfolded input windows) and `conv1d_history`
for an owner that holds an int8 weight (`keep`, slot "_w8f": codec_quant.py asks for one in the
quantized modes through `ops.keep_int8`) and declines every other operand, so it leads those
chains without changing what a float weight runs on. An optional op it has no int8 form of
(`conv_transpose1d`, a fused `conv1d_history`) it ends with `plan.STOP` for such an owner: the
backends after it could not read the weight, and the layer computes it through the ops above. The float weight it replaces is a stand-in
on the meta device (shape and strides only); the operands' `w` gives the layout.

Available for float32 models on CPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .derived import stand_in
from .gemm_conv_backend import unfold

NAME = "w8f"
OWN_WEIGHTS = True  # serves only the weights it keeps (`Plan.leads`)
SLOT = "_w8f"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32


def keep(owner: nn.Module, param_owner: nn.Module, view) -> int:
    """Quantize `view(param_owner.weight)` (the 2-D matrix (N, K) that `owner`'s products use:
    for a convolution (Cout, k * Cin), k major, the unfolded windows' order) into `owner`'s int8
    weight and replace the float parameter by a stand-in. Returns the weights converted (0 where
    already done)."""
    from ..native.w8f import W8Weight  # (at call time: the native package is loaded only where used)

    if SLOT in owner.__dict__:
        return 0
    owner.__dict__[SLOT] = W8Weight(view(param_owner.weight))
    return stand_in(param_owner).numel()


def gemm(plan, owner, x, w, bias):
    q = owner.__dict__.get(SLOT)
    return None if q is None else q(x, bias, plan.lib)


def conv1d(plan, owner, x, w, bias, stride, dilation, groups, cl):
    q = owner.__dict__.get(SLOT)
    if q is None:
        return None
    n = (x.shape[-1] - (w.shape[2] - 1) * dilation - 1) // stride + 1  # output length
    cols, _ = unfold(x, w, n, stride, dilation)  # (B*n, k*Cin)
    return q(cols, bias, plan.lib).view(x.shape[0], n, -1).transpose(1, 2)  # (B, Cout, n): channels-last memory


def conv1d_history(plan, owner, x, history, w, bias, dilation, groups, epilogue=None):
    """The streaming step of an int8 convolution (the history concatenated, then `conv1d`).
    The fused form (a residual unit's `epilogue`, see ops.conv1d_history) where this layer or the
    unit's 1x1 layer holds an int8 weight: `plan.STOP` (the layer computes it step by step)."""
    if epilogue is not None and (SLOT in owner.__dict__ or SLOT in epilogue[3].__dict__):
        return plan.STOP
    if SLOT not in owner.__dict__:
        return None
    xx = torch.cat([history, x.transpose(1, 2)], dim=1).transpose(1, 2)  # (B, Cin, P + N) over (B, P + N, Cin)
    return conv1d(plan, owner, xx, w, bias, 1, dilation, groups, True)


def _not_served(plan, owner, *args):
    """An optional op with no int8 form here (the blocks of a transposed convolution): `plan.STOP` for
    a module holding an int8 weight (the layer computes it through `gemm`), else passed on."""
    return plan.STOP if SLOT in owner.__dict__ else None


OPS = {"gemm": gemm, "conv1d": conv1d, "conv1d_history": conv1d_history, "conv_transpose1d": _not_served}
