"""The w4a8 mode: int4 group-wise weights x per-row int8 activations (quant4.py, native/q4.c).
The kernels against an exact float64 model of their definition on every instruction set this CPU
runs (aarch64 under qemu-user: tests/test_native_cross.py), bit-equal across sets; the packed layout decoded by its
documented rule; the torch definition (no library) against the same model; the whole mode end to
end (native decode steps equal the same layers run as torch ops, greedy codes too)."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn as nn

from native_isas import fresh_library, int8_rows, isas, q4_reference, using, without_native  # noqa: F401 (fresh_library: an autouse fixture)
from qwen3tts import native
from qwen3tts.native.q4 import NativeW4A8Linear, pack
from qwen3tts.native.stack import NativeStack
from qwen3tts.quant4 import W4A8Linear

ISAS = isas()


def _groups(w: torch.Tensor, G: int, Kp: int):
    """The mode's weights, written out here: per (row, group of G inputs) scale max|w| / 7 rounded
    to bfloat16, values round(w / scale) in [-7, 7]; inputs zero padded to Kp."""
    N, K = w.shape
    wp = torch.zeros(N, Kp, dtype=torch.float64)
    wp[:, :K] = w.double()
    wg = wp.reshape(N, Kp // G, G)
    s = (wg.abs().amax(-1).float() / 7).clamp(min=1e-12).to(torch.bfloat16).double()  # (N, groups)
    q = torch.round(wg.float() / s.float()[..., None]).clamp(-7, 7).long()
    return q, s


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("N,K,G,M", [(37, 100, 32, 5), (16, 64, 64, 1), (1, 128, 32, 3), (53, 320, 64, 9), (96, 1024, 32, 4),
                                     (40, 192, 32, 54)])  # the last: prefill rows (4-row passes and a 2-row tail)
def test_q4_gemm_is_exact_integer_sums(N, K, G, M, isa):
    """qwen3tts_q4_gemm on int8 rows: extreme values (weights +-7, activations +-127, the largest
    int16 partial sums of AVX2) and random ones; odd row counts, padded inputs, row tails, a
    prompt's worth of rows."""
    g = torch.Generator().manual_seed(N * K + M)
    Kp = -(-K // 64) * 64
    q = torch.randint(-7, 8, (N, Kp // G, G), generator=g)
    q[0] = 7  # row 0: all +7 ...
    qw = q.reshape(N, Kp)
    qw[:, K:] = 0
    q = qw.reshape(N, Kp // G, G)
    s = (torch.rand(N, Kp // G, generator=g) * 0.01 + 1e-4).to(torch.bfloat16).double()
    xq = torch.randint(-127, 128, (M, Kp), generator=g)
    xq[0] = 127  # ... times all +127: the largest sums
    if M > 1:
        xq[1] = -127
    xq[:, K:] = 0
    sx = torch.rand(M, 1, generator=g).double() * 0.1 + 1e-3
    packed, scales = pack(qw.to(torch.int8), s.float())
    L = native.Lin(packed.data_ptr(), scales.data_ptr(), None, None, N, K, Kp, 4, G)
    x8, sx32 = xq.to(torch.int8).contiguous(), sx.float().reshape(M).contiguous()
    y = torch.empty(M, N)
    with using(isa) as lib:
        lib.qwen3tts_q4_gemm(ctypes.byref(L), x8.data_ptr(), sx32.data_ptr(), M, y.data_ptr(), 2)
    want = q4_reference(q, s, xq, sx32.double()[:, None])
    assert (y.double() - want).abs().max().item() <= 1e-6 * want.abs().max().item()
    with using("portable") as lib:
        yp = torch.empty(M, N)
        lib.qwen3tts_q4_gemm(ctypes.byref(L), x8.data_ptr(), sx32.data_ptr(), M, yp.data_ptr(), 1)
    assert torch.equal(y, yp)  # the same integer sums and float steps on every set


def test_packed_layout_decodes_by_its_rule():
    """q4.c's layout: block b of 16 rows, 64 bytes per 8 inputs, byte r * 4 + j: input j (low
    nibble) and j + 4 (high) of row r, as w + 8; scales 16 per block and group."""
    g = torch.Generator().manual_seed(5)
    N, Kp, G = 21, 128, 32
    q = torch.randint(-7, 8, (N, Kp), generator=g, dtype=torch.int8)
    s = torch.rand(N, Kp // G, generator=g)
    packed, scales = pack(q, s)
    assert packed.dtype == torch.uint8 and packed.numel() == 32 * Kp // 2 and scales.dtype == torch.bfloat16
    for n in (0, 5, 16, 20):
        b, r = divmod(n, 16)
        for k in (0, 3, 4, 7, 8, 61, 127):
            byte = int(packed[b * 8 * Kp + (k // 8) * 64 + r * 4 + (k % 4)])
            assert ((byte >> 4) if k % 8 >= 4 else (byte & 15)) == int(q[n, k]) + 8
        for gi in range(Kp // G):
            assert scales[(b * (Kp // G) + gi) * 16 + r].item() == s[n, gi].to(torch.bfloat16).item()
    pad = packed[8 * Kp :].reshape(Kp // 8, 16, 4)[:, 5:]  # rows 21..31 of block 1: zero weights (8)
    assert torch.equal(pad, torch.full_like(pad, 0x88))
    assert torch.equal(scales[(Kp // G) * 16 :].reshape(Kp // G, 16)[:, 5:].float(), torch.zeros(Kp // G, 11))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("K,N,G", [(100, 37, 32), (256, 96, 64), (64, 17, 32)])
def test_native_w4a8_linear_equals_its_definition(K, N, G, isa):
    torch.manual_seed(K + N)
    lin = nn.Linear(K, N, bias=True)
    mod = NativeW4A8Linear(lin, G)
    assert not any(t.is_floating_point() and t.dtype == torch.float32 and t.numel() >= N * K for t in mod.buffers())  # no float copy
    assert mod.weight_q.numel() == -(-N // 16) * 16 * mod.kp // 2
    x = torch.randn(7, K) * torch.tensor([1e-3, 1.0, 30.0, 1e3, 1.0, 0.5, 2.0])[:, None]
    with using(isa), torch.inference_mode():
        got = mod(x)
    q, s = _groups(lin.weight.detach(), G, mod.kp)
    xq, sx = int8_rows(x)
    xq = torch.nn.functional.pad(xq, (0, mod.kp - K))
    want = q4_reference(q, s, xq, sx) + lin.bias.detach().double()
    for r in range(7):
        assert (got[r].double() - want[r]).abs().max().item() <= 2e-6 * want[r].abs().max().item()
    with torch.inference_mode():
        torch_def = W4A8Linear(lin, G)(x)  # the definition in torch (builds without the library)
    assert (torch_def.double() - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    exact = (x @ lin.weight.T + lin.bias).detach()
    rel = ((got - exact).norm(dim=1) / (exact - lin.bias.detach()).norm(dim=1)).max().item()
    assert rel < 0.15  # int4 weights: about 7% on uniform random weights


@pytest.mark.parametrize("isa", ISAS)
def test_rows_do_not_depend_on_the_batch(isa):
    torch.manual_seed(1)
    mod = NativeW4A8Linear(nn.Linear(512, 320, bias=False))
    x = torch.randn(37, 512) * torch.linspace(0.01, 10.0, 37)[:, None]
    with using(isa), torch.inference_mode():
        together = mod(x)
        for b in (0, 3, 4, 36):
            assert torch.equal(together[b], mod(x[b : b + 1])[0])
        assert torch.equal(mod(torch.zeros(2, 512)), torch.zeros(2, 320))
        assert mod(x.to(torch.bfloat16)).dtype == torch.bfloat16


# ------------------------------------------------------------------ the whole mode
@pytest.fixture(scope="module")
def w4a8_tts(tiny_tts):
    from qwen3tts import Qwen3TTS

    native.reset()
    tts = Qwen3TTS.from_pretrained(tiny_tts.path, quantize="w4a8")
    return tts


def test_the_mode_holds_only_int4_weights(w4a8_tts):
    """The stacks' linears hold int4 weights; the output heads (where codes are picked) int8."""
    from qwen3tts.native.stack import NativeW8A8Linear

    t = w4a8_tts.talker
    assert isinstance(t.model.native, NativeStack) and isinstance(t.code_predictor.model.native, NativeStack)
    lins = [m for m in t.modules() if isinstance(m, NativeW4A8Linear)]
    assert len(lins) == 4 * (len(t.model.layers) + len(t.code_predictor.model.layers))
    heads = [t.codec_head, *t.code_predictor.lm_head]
    assert all(type(h) is NativeW8A8Linear for h in heads)
    assert not any(isinstance(m, nn.Linear) for s in (t.model, t.code_predictor.model) for m in s.modules())


@pytest.mark.parametrize("isa", ISAS)
def test_w4a8_generates_and_native_steps_equal_torch_ops(w4a8_tts, tiny_icl_voice, isa):
    """End to end: the native decode steps of the int4 stacks give the codes of the same layers
    run as torch ops (each linear still the native int4 product), and the codes are in range."""
    kw = dict(language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=16)
    tk, cp = w4a8_tts.talker.model, w4a8_tts.talker.code_predictor.model
    lengths = []
    with using(isa):
        for text, voice in [("Hello there, how are you today?", tiny_icl_voice), ("Third.", None)]:
            got = w4a8_tts.generate(text, voice=voice, **kw)
            want = without_native(tk, lambda: without_native(cp, lambda: w4a8_tts.generate(text, voice=voice, **kw).codes))
            codes = got.codes
            assert codes.shape[0] >= 1 and torch.equal(codes, want)
            assert codes.min().item() >= 0 and got.audio.numel() > 0
            lengths.append(codes.shape[0])
    assert max(lengths) > 3


def test_w4a8_without_the_library_runs_the_torch_definition(tiny_tts, monkeypatch):
    from qwen3tts import Qwen3TTS

    monkeypatch.setenv("QWEN3TTS_NATIVE", "off")
    native.reset()
    tts = Qwen3TTS.from_pretrained(tiny_tts.path, quantize="w4a8")
    assert tts.talker.model.native is None
    assert isinstance(tts.talker.model.layers[0].mlp.down_proj, W4A8Linear)
    res = tts.generate("Hello.", language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=6)
    assert res.codes.shape[0] > 0 and res.audio.numel() > 0
