"""int8 modes (`qwen3tts.quant`). Weight-only int8: both compute paths (int8 GEMV for decode,
dequantized bf16 GEMM for prefill-sized inputs) against the dequantized reference. W8A8: the
fbgemm kernel against an exact float64 model of what it computes (per-row int8 activations x
per-channel int8 weights), per-row independence (a batch equals its rows alone), and the
conversion of a whole talker in both modes (w8a8 on fbgemm and on the native library, whose own
kernels are tested in test_native.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qwen3tts import options
from qwen3tts.quant import ACT_LEVELS, DEQUANT_ROWS, Int8Linear, W8A8Linear, linear_class, quantize_talker


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


def _w8a8_reference(q: W8A8Linear, x: torch.Tensor) -> torch.Tensor:
    """What the W8A8 kernel computes, in float64: each row quantized by its own max |x| to
    +-ACT_LEVELS, times the int8 weights and their per-channel scales, scaled back."""
    wq, ws = q.quantized_weight()
    x = x.double()
    s = x.abs().amax(-1, keepdim=True)
    xq = torch.round(x / s * ACT_LEVELS).clamp(-ACT_LEVELS, ACT_LEVELS)
    return (xq @ (wq.double() * ws.double()[:, None]).T) * s / ACT_LEVELS


def test_w8a8_linear_is_per_row_int8():
    torch.manual_seed(0)
    lin = nn.Linear(256, 384, bias=True)
    q = W8A8Linear(lin)
    wq, ws = q.quantized_weight()
    assert wq.dtype == torch.int8 and wq.shape == (384, 256)
    assert torch.allclose(ws, lin.weight.abs().amax(1) / 127, rtol=1e-6)  # symmetric per output channel
    # rows of wildly different scales in one batch: each keeps its own precision
    x = torch.randn(5, 256) * torch.tensor([1e-3, 1.0, 30.0, 1e3, 1.0])[:, None]
    with torch.inference_mode():
        got = q(x)
    want = _w8a8_reference(q, x) + lin.bias.double()
    for r in range(5):
        scale = want[r].abs().max().item()
        assert (got[r].double() - want[r]).abs().max().item() <= 1e-5 * scale + 1e-6
    exact = (x @ lin.weight.T + lin.bias).detach()
    rel = ((got - exact).norm(dim=1) / (exact - lin.bias.detach()).norm(dim=1)).max().item()
    assert rel < 3e-2  # 8-bit weights and activations: ~1 % per linear on random data


def test_w8a8_rows_do_not_depend_on_the_batch():
    torch.manual_seed(1)
    q = W8A8Linear(nn.Linear(512, 1024, bias=False))
    x = torch.randn(4, 1, 512) * torch.tensor([0.1, 1.0, 10.0, 3.0])[:, None, None]
    with torch.inference_mode():
        together = q(x)
        for b in range(4):
            assert torch.equal(together[b], q(x[b : b + 1])[0])
        zero = q(torch.zeros(2, 512))  # an all-zero row stays finite (and zero)
    assert torch.equal(zero, torch.zeros(2, 1024))
    assert q(x.to(torch.bfloat16)).dtype == torch.bfloat16  # output in the activation dtype


@pytest.mark.parametrize("mode,native", [("int8", "off"), ("w8a8", "off"), ("w8a8", "on")])
def test_quantize_talker_converts_every_stack_linear(tiny_tts, mode, native, monkeypatch):
    from qwen3tts import Qwen3TTS

    monkeypatch.setenv("QWEN3TTS_NATIVE", native)
    options.reload()
    dtype = torch.bfloat16 if mode == "int8" else torch.float32
    tts = Qwen3TTS.from_pretrained(tiny_tts.path, dtype=dtype)
    n = quantize_talker(tts.talker, mode)
    cls = linear_class(mode, dtype)
    assert cls.__name__ == {"int8": "Int8Linear", "w8a8": "W8A8Linear" if native == "off" else "NativeW8A8Linear"}[mode]
    # the native library runs whole decode steps of both stacks
    assert (tts.talker.model.native is not None) == (native == "on") == (tts.talker.code_predictor.model.native is not None)
    lins = [m for m in tts.talker.modules() if isinstance(m, cls)]
    assert not any(isinstance(m, nn.Linear) for m in tts.talker.model.layers.modules())
    cfg = tts.config.talker
    # per layer: fused qkv, o, fused gate/up, down; plus the codec head and 15 predictor heads
    assert len(lins) == 4 * (cfg.num_hidden_layers + cfg.code_predictor.num_hidden_layers) + 1 + 15
    assert n == sum(m.in_features * m.out_features for m in lins)
    out = tts.generate("Int eight.", do_sample=False, subtalker_dosample=False, max_new_tokens=5)
    assert out.codes.shape == (4, 16) and torch.isfinite(out.audio).all()


def test_quantize_mode_is_checked(tiny_tts):
    from qwen3tts import Qwen3TTS

    with pytest.raises(ValueError, match="quantize must be"):
        Qwen3TTS.from_pretrained(tiny_tts.path, quantize="int4")
    with pytest.raises(ValueError, match="quantize mode must be"):
        quantize_talker(tiny_tts.talker, "fp8")


@pytest.mark.parametrize("native", ["off", "on"])
def test_w8a8_batched_equals_alone(tiny_tts, tiny_icl_voice, native, monkeypatch):
    """Per-row activation scales: a session's greedy codes are the same batched or alone (fbgemm
    kernels and the native library)."""
    from qwen3tts import Qwen3TTS
    from qwen3tts.batch import Utterance, step

    monkeypatch.setenv("QWEN3TTS_NATIVE", native)
    options.reload()
    tts = Qwen3TTS.from_pretrained(tiny_tts.path, quantize="w8a8")
    assert (tts.talker.model.native is not None) == (native == "on")
    texts = ["Hello there, how are you today?", "A second, different sentence.", "Third."]
    kw = dict(language="English", do_sample=False, subtalker_dosample=False)
    voices = [tiny_icl_voice, None, tiny_icl_voice]
    alone = [torch.cat([c.codes for c in tts.stream(t, voice=v, max_new_tokens=8, **kw)]) for t, v in zip(texts, voices)]
    utts = [Utterance(tts, t, voice=v, max_new_tokens=8, **kw) for t, v in zip(texts, voices)]
    got = [[] for _ in utts]
    while not all(u.done for u in utts):
        for i, c in enumerate(step(tts, utts)):
            if c is not None:
                got[i].append(c.codes)
    for a, g in zip(alone, got):
        assert torch.equal(a, torch.cat(g))
