"""Optional weight-only int8 quantization of the talker and code predictor (CPU speed).

Decoding one frame reads ~1.65 G weights (talker once, code predictor 15 times) and is bound by
memory bandwidth, so bytes per weight set the speed: fp32 4, bf16 2, int8 1. Each `nn.Linear`
of the transformer stacks and the output heads becomes `Int8Linear`: symmetric per-output-channel
int8 weights (scale = max|w| / 127) with bf16 activations, computed by PyTorch's
`aten._weight_int8pack_mm` (the kernel gpt-fast uses for int8 on CPU). Embeddings, norms and the
text projection (prefill only) stay in the model dtype. Numerics drift from fp32; the drift
(greedy code agreement) is measured by `scripts/drift.py` and reported in docs/benchmarks.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn


# Above this many rows (prefill) a linear dequantizes its weight and runs one bf16 GEMM: on the
# 2-core AVX-512 machine `_weight_int8pack_mm` costs ~0.09 ms per row for a 6144 x 1024 weight
# (75 rows: 7.0 ms) while dequantize + GEMM is ~1 ms + the GEMM (75 rows: 4.2 ms); they cross
# near 40 rows.
DEQUANT_ROWS = 40


class Int8Linear(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.register_buffer("weight_int8", q.contiguous())
        self.register_buffer("scales", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)  # (M, K)
        if x2.shape[0] > DEQUANT_ROWS:  # prefill: the int8 kernel costs ~M GEMVs; a bf16 GEMM wins
            y = x2 @ self.dequantized().T
        else:  # decode (M = 1 .. a few sessions): weight-only int8 GEMV, half the bytes of bf16
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight_int8, self.scales)
        y = y.reshape(*shape[:-1], self.out_features).to(x.dtype)
        return y + self.bias if self.bias is not None else y

    def dequantized(self) -> torch.Tensor:
        """The weight as bf16 (q * scale), (out, in); built per call, never kept."""
        return self.weight_int8.to(torch.bfloat16) * self.scales[:, None]


def _swap(parent: nn.Module, name: str) -> int:
    lin = getattr(parent, name)
    if isinstance(lin, nn.Linear):
        setattr(parent, name, Int8Linear(lin))
        return lin.weight.numel()
    return 0


@torch.no_grad()
def quantize_talker_int8(talker) -> int:
    """Quantize the talker's and code predictor's linear layers in place; returns weights converted."""
    n = 0
    for stack in (talker.model, talker.code_predictor.model):
        for layer in stack.layers:
            a, m = layer.self_attn, layer.mlp
            for name in ("qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj"):
                if getattr(a, name, None) is not None:
                    n += _swap(a, name)
            for name in ("gate_up_proj", "gate_proj", "up_proj", "down_proj"):
                if getattr(m, name, None) is not None:
                    n += _swap(m, name)
    n += _swap(talker, "codec_head")
    for i in range(len(talker.code_predictor.lm_head)):
        n += _swap(talker.code_predictor.lm_head, str(i))
    return n
