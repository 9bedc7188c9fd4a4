"""int4 weights for the w4a8 mode (CPU speed; no counterpart in the official model).

A decode frame reads every weight of the talker once and of the code predictor 15 times, so its
speed is set by bytes per weight (quant.py). w4a8 halves w8a8's: symmetric int4 weights
w = round(W / s_g) in [-7, 7], one scale s_g = max |W| / 7 (rounded to bfloat16) per output row and group of
`GROUP` consecutive inputs (a group follows the local range of the weights far better than one
scale per row), with per-row int8 activations as in w8a8. The product of activation row m and
weight row n is

    y_mn = sum_g s_ng * (sum_{k in g} x_mk w_nk) * (max_k |x_mk| / 127)   (+ bias_n)

with x_mk = round(x_mk * 127 / max |x_m|); the group sums are exact integers. The native library
computes it (native/q4.py, q4.c); `W4A8Linear` is the same definition in torch for builds without
the library. Drift against float32: scripts/drift.py.
"""

from __future__ import annotations

import torch
import torch.nn as nn

GROUP = 32  # inputs per weight scale (q4.c takes 32 or 64)
LEVELS = 7  # int4 weights in [-LEVELS, LEVELS]
KALIGN = 64  # inputs are zero padded to a multiple of this (decode.c KALIGN)


def quantize_groups(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(int4 values as int8 (out, Kp), scales (out, Kp / group): float32 holding bfloat16 values)
    of a weight (out, in), its inputs zero padded to Kp, a multiple of KALIGN."""
    if group not in (32, 64):
        raise ValueError(f"the int4 group must be 32 or 64 inputs, not {group}")
    w = w.detach().float().cpu()
    N, K = w.shape
    Kp = -(-K // KALIGN) * KALIGN
    wp = torch.zeros(N, Kp) if Kp != K else w
    if Kp != K:
        wp[:, :K] = w
    wg = wp.reshape(N, Kp // group, group)  # (N, groups, group)
    scale = (wg.abs().amax(-1) / LEVELS).clamp(min=1e-12).to(torch.bfloat16).float()  # (N, groups)
    q = torch.round(wg / scale[..., None]).clamp(-LEVELS, LEVELS).to(torch.int8)
    return q.reshape(N, Kp), scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row int8 activations of w8a8 (decode.c quant_row): (values (M, K) float32 in +-127,
    s / 127 (M, 1)), s = max |x| per row."""
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-30)  # (M, 1)
    return torch.round(x * (127.0 / s)).clamp(-127, 127), s / 127.0


class W4A8Linear(nn.Module):
    """The w4a8 product in torch (see the module docstring): the path without the native library."""

    def __init__(self, lin: nn.Linear, group: int = GROUP):
        super().__init__()
        q, scale = quantize_groups(lin.weight, group)
        self.in_features, self.out_features, self.group = lin.in_features, lin.out_features, group
        self.register_buffer("weight_q", q)  # (N, Kp) int4 values
        self.register_buffer("scales", scale)  # (N, Kp / group)
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        xq, sx = quantize_rows(x.reshape(-1, shape[-1]).float())  # (M, K), (M, 1)
        M, K, G = xq.shape[0], self.in_features, self.group
        Kp = self.weight_q.shape[1]
        xg = torch.nn.functional.pad(xq, (0, Kp - K)).reshape(M, Kp // G, G)  # (M, groups, G)
        wg = self.weight_q.float().reshape(self.out_features, Kp // G, G)  # (N, groups, G)
        d = torch.einsum("mgk,ngk->mng", xg, wg)  # (M, N, groups): integer group sums, exact in float32
        y = (d * self.scales).sum(-1) * sx
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(dtype)
