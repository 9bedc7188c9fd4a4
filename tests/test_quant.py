"""Weight-only int8 (`qwen3tts.quant`): both compute paths (int8 GEMV for decode, dequantized
bf16 GEMM for prefill-sized inputs) against the dequantized reference, and the conversion."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qwen3tts.quant import DEQUANT_ROWS, Int8Linear, quantize_talker_int8


@pytest.mark.parametrize("rows", [1, 4, DEQUANT_ROWS, DEQUANT_ROWS + 1, 100])
def test_int8_linear_paths_match_dequantized_reference(rows):
    torch.manual_seed(0)
    lin = nn.Linear(256, 384, bias=True)
    q = Int8Linear(lin)
    w = q.weight_int8.float() * q.scales.float()[:, None]  # what the int8 weights represent
    step = lin.weight.abs().amax(1, keepdim=True) / 127
    assert ((w - lin.weight).abs() <= 0.5 * step + lin.weight.abs() * 2**-8 + 1e-6).all()  # half a step + the bf16 scale
    x = torch.randn(2, rows, 256)
    want = x.to(torch.bfloat16).float() @ w.T + lin.bias
    with torch.inference_mode():
        got = q(x)
    assert got.shape == (2, rows, 384) and got.dtype == torch.float32
    assert ((got - want).abs().max() / want.abs().max()).item() < 2e-2  # bf16 activations / dequantized weights


def test_quantize_talker_converts_every_stack_linear(tiny_tts):
    from qwen3tts import Qwen3TTS

    tts = Qwen3TTS.from_pretrained(tiny_tts.path, dtype=torch.bfloat16)
    n = quantize_talker_int8(tts.talker)
    lins = [m for m in tts.talker.modules() if isinstance(m, Int8Linear)]
    cfg = tts.config.talker
    # per layer: fused qkv, o, fused gate/up, down; plus the codec head and 15 predictor heads
    assert len(lins) == 4 * (cfg.num_hidden_layers + cfg.code_predictor.num_hidden_layers) + 1 + 15
    assert n == sum(m.weight_int8.numel() for m in lins)
    out = tts.generate("Int eight.", do_sample=False, subtalker_dosample=False, max_new_tokens=5)
    assert out.codes.shape == (4, 16) and torch.isfinite(out.audio).all()
