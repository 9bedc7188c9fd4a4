"""Torch-facing side of the native int4 kernels (q4.c): the w4a8 linear.

`NativeW4A8Linear` replaces an `nn.Linear` in w4a8 mode (quant4.py's definition) when the
library is available. It holds only the packed int4 weights and their group scales, in the
layout q4.c streams (blocks of 16 output rows, see there), and gives the library a `Lin`
descriptor with bits = 4, so it serves every row count (prefill) and `NativeStack` runs whole
decode steps of a stack of them exactly as of `NativeW8A8Linear`s.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..quant4 import GROUP, quantize_groups
from . import Lin, hugepages, load
from .linear import NativeLinear

NB = 16  # q4.c Q4_NB: output rows per packed block


def pack(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q4.c's layout of int4 values q (N, Kp) int8 and group scales (N, groups): (packed bytes
    (ceil(N / 16) * 16 * Kp / 2,) uint8, scales (ceil(N / 16) * groups * 16,) bfloat16); rows
    past N are zero weights with zero scales."""
    N, Kp = q.shape
    nb = -(-N // NB)
    u = torch.full((nb * NB, Kp), 8, dtype=torch.uint8)
    u[:N] = (q.to(torch.int16) + 8).to(torch.uint8)  # u = w + 8 in [1, 15]
    u = u.reshape(nb, NB, Kp // 8, 2, 4)  # (block, row, 8 inputs, low / high nibble, 4 inputs)
    packed = (u[:, :, :, 0] | (u[:, :, :, 1] << 4)).permute(0, 2, 1, 3)  # (block, 8 inputs, row, 4 inputs)
    s = torch.zeros(nb * NB, scale.shape[1], dtype=torch.bfloat16)
    s[:N] = scale
    s = s.reshape(nb, NB, -1).permute(0, 2, 1)  # (block, group, row)
    return hugepages.weight_copy(packed).reshape(-1), s.contiguous().reshape(-1)  # the weights streamed whole: huge pages


class NativeW4A8Linear(NativeLinear):
    """y = x W^T (+ b) with group-wise int4 W and per-row int8 x (quant4.py); see q4.c."""

    def __init__(self, lin: nn.Linear, group: int = GROUP):
        super().__init__()
        self.lib = load()
        q, scale = quantize_groups(lin.weight, group)
        self.in_features, self.out_features, self.group, self.kp = lin.in_features, lin.out_features, group, q.shape[1]
        packed, scales = pack(q, scale)
        self.register_buffer("weight_q", packed)  # packed int4 blocks, as q4.c reads them
        self.register_buffer("scales", scales)  # bfloat16 group scales, per block
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().cpu().contiguous())
        self.desc = self.make_desc()

    def make_desc(self) -> Lin:
        bias = None if self.bias is None else self.bias.data_ptr()
        return Lin(self.weight_q.data_ptr(), self.scales.data_ptr(), None, bias, self.out_features, self.in_features, self.kp, 4,
                   self.group)
