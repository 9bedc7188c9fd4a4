"""Winograd F(4, 7) convolutions of the codec decoder (codec/winograd.py, native/codec.c): the
transform matrices are exact, the native transforms compute the convolution within float32
rounding (any dilation, batch, length, piece size), the codec layers use it where they should,
and a codec with it on stays within the parity and streaming tolerances; every instruction set
the CPU runs (native_isas)."""

from __future__ import annotations

import math
import os
import platform

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL, max_abs, mid_speech_tokenizer
from native_isas import isas, using
from qwen3tts import native, ops, options
from qwen3tts.codec import winograd
from qwen3tts.codec.layers import CausalConv1d

pytestmark = pytest.mark.skipif(not native.available(), reason="needs the native library (a C compiler)")
ISAS = isas()


@pytest.fixture(autouse=True)
def _best_isa():
    yield
    native.set_isa(None)  # tests that pick an instruction set leave the default behind


def test_matrices_are_an_exact_correlation():
    for m, r in [(4, 7), (2, 3), (2, 7), (6, 3)]:
        pts = winograd.POINTS[: m + r - 2] if (m, r) == (4, 7) else [0, 1, -1, 2, -2, 0.5, -0.5][: m + r - 2]
        AT, G, BT = winograd.matrices(m, r, pts)
        assert AT.shape == (m, m + r - 1) and G.shape == (m + r - 1, r) and BT.shape == (m + r - 1,) * 2
        g = torch.Generator().manual_seed(m * 10 + r)
        for _ in range(5):
            x, w = torch.randn(m + r - 1, dtype=torch.float64, generator=g), torch.randn(r, dtype=torch.float64, generator=g)
            direct = torch.stack([(w * x[p : p + r]).sum() for p in range(m)])
            assert max_abs(AT @ ((G @ w) * (BT @ x)), direct) < 1e-12
    with pytest.raises(ValueError, match="distinct"):
        winograd.matrices(4, 7, [0, 1, 1, 2, -2, 3, -3, 4, -4])


def _case(C, cout, L, d, B, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, C, 7, generator=g) / math.sqrt(7 * C)
    b = torch.randn(cout, generator=g) * 0.1
    x = torch.randn(B, L, C, generator=g).transpose(1, 2)  # channels-last, as in the decoder
    ref = F.conv1d(x.double(), w.double(), b.double(), dilation=d)
    direct = F.conv1d(x, w, b, dilation=d)
    return w, b, x, ref, direct


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("C,cout,L,d,B", [(96, 96, 2000, 1, 1), (64, 48, 500, 3, 2), (32, 40, 257, 9, 3), (16, 16, 60, 9, 1), (8, 8, 7, 1, 1)])
def test_native_conv_equals_float64_convolution(C, cout, L, d, B, isa, monkeypatch):
    """Lengths that are not whole tiles, dilations with several phases, batches, a single output."""
    monkeypatch.setattr(winograd, "FUSED_MAX_CHANNELS", 0)  # the transforms (the fused kernel: below)
    native.set_isa(isa)
    w, b, x, ref, direct = _case(C, cout, L, d, B, seed=C + L)
    U = winograd.transform_weight(w)
    assert U.shape == (10, C, cout)
    y = winograd.conv(x, U, b, d, native.load())
    assert y.shape == ref.shape and y.transpose(1, 2).is_contiguous()
    scale = ref.abs().max().item()
    # F(4, 7) rounding: ~2e-5 of the output scale here (a direct float32 conv: ~1-6e-6); on the
    # full codec the decoded audio hardly moves (test_codec_with_winograd_offline_and_streaming)
    assert max_abs(y, ref) < 4e-5 * max(scale, 1.0)
    assert max_abs(direct, ref) < 1e-5 * max(scale, 1.0)
    assert torch.equal(winograd.conv(x, U, None, d, native.load()) + b[:, None], y)  # the bias is added last
    monkeypatch.setattr(winograd, "PIECE_BYTES", 1)  # many pieces of 64 rows: the same tiles
    assert max_abs(winograd.conv(x, U, b, d, native.load()), y) < 1e-6


def test_native_conv_refuses_what_does_not_fit():
    w, b, x, _, _ = _case(16, 16, 40, 1, 1, seed=1)
    U = winograd.transform_weight(w)
    with pytest.raises(ValueError, match="does not fit"):
        winograd.conv(x[:, :8], U, b, 1, native.load())  # channels
    with pytest.raises(ValueError, match="does not fit"):
        winograd.conv(x[..., :6], U, b, 1, native.load())  # shorter than the kernel
    with pytest.raises(ValueError, match="does not fit"):
        winograd.conv(x.double(), U, b, 1, native.load())


def test_every_isa_gives_the_same_transforms(monkeypatch):
    """The vector transforms (a tile row in registers, 16 or 8 channels at a time) do the plain
    loops' operations: the same floats on every path; the few-row linear within rounding."""
    monkeypatch.setattr(winograd, "FUSED_MAX_CHANNELS", 0)
    w, b, x, ref, _ = _case(44, 52, 300, 3, 2, seed=7)  # channels that are not whole vectors
    U = winograd.transform_weight(w)
    ys = {}
    for name in ISAS:
        with using(name) as lib:
            ys[name] = winograd.conv(x, U, b, 3, lib)
    for name, y in ys.items():
        assert torch.equal(y, ys["portable"]), name
    xs, w, bias = torch.randn(5, 40), torch.randn(9, 40), torch.randn(9)
    for name in ISAS:
        with using(name) as lib:
            y = torch.empty(5, 9)
            lib.qwen3tts_linear_f32(xs.data_ptr(), 5, 40, w.data_ptr(), bias.data_ptr(), 9, y.data_ptr(), 1)
        assert max_abs(y, xs @ w.T + bias) < 1e-5, name


def test_causal_conv_uses_winograd_where_it_pays(monkeypatch):
    torch.manual_seed(3)
    big, small = CausalConv1d(96, 96, 7, dilation=3), CausalConv1d(48, 48, 7)
    k3 = CausalConv1d(96, 96, 3)
    for m in (big, small, k3):
        m.use_channels_last()
    with torch.inference_mode():
        x = torch.randn(2, 96, 300)
        y = big(x)
        assert "_winograd" in big.__dict__
        small(torch.randn(1, 48, 300)), k3(x)
        assert "_winograd" not in small.__dict__ and "_winograd" not in k3.__dict__
        monkeypatch.setenv("QWEN3TTS_WINOGRAD", "0")
        options.reload()
        y_direct = big(x)
        assert max_abs(y, y_direct) < 1e-4 and max_abs(y, y_direct) > 0  # other arithmetic, same convolution
        with pytest.raises(ValueError, match="QWEN3TTS_WINOGRAD must be 0 or 1"):
            options.from_env({"QWEN3TTS_WINOGRAD": "fast"})
    monkeypatch.setenv("QWEN3TTS_WINOGRAD", "1")
    options.reload()
    with torch.no_grad():  # new weights (as a checkpoint load does): U is recomputed
        big.conv.weight.mul_(2)
        big.conv.bias.zero_()
        y2 = big(x)
    assert max_abs(y2, F.conv1d(F.pad(x, (18, 0)), big.conv.weight, None, dilation=3)) < 1e-4
    def refuse(*a, **k):
        raise AssertionError("Winograd used for a weight-bound step")

    with torch.inference_mode(), monkeypatch.context() as mp:  # few outputs stay on the GEMM path
        mp.setattr(winograd, "conv", refuse)
        assert winograd.gemm_rows(1, 32, 1) == 8 and winograd.gemm_rows(4, 32, 9) == 36 and winograd.gemm_rows(2, 5, 3) == 6
        y1 = big._conv(torch.randn(1, 96, 24 + 18))  # dilation 3: rows = 3 x ceil(24 / 12) = 6, under every ISA
        assert y1.shape == (1, 96, 24)
    monkeypatch.setenv("QWEN3TTS_NATIVE", "off")  # no native library: direct convolutions
    options.reload()
    fresh = CausalConv1d(96, 96, 7)
    fresh.use_channels_last()
    with torch.inference_mode():
        fresh(x)
        assert "_winograd" in big.__dict__  # a cached U is not used once the library is switched off
        assert max_abs(big(x), F.conv1d(F.pad(x, (18, 0)), big.conv.weight, big.conv.bias, dilation=3)) < 1e-4
    assert "_winograd" not in fresh.__dict__


def test_winograd_pays_from_fewer_rows_under_avx2():
    """From MIN_ROWS GEMM rows under every instruction set; under AVX2 (half the FMA width) also
    from MIN_ROWS_AVX2 rows whose tiles are >= 3/4 used: a 1-frame streaming step of the
    768-channel convolutions (32 outputs, dilations 1, 3, 9: 8, 9, 9 rows)."""
    for isa in ("avx512", "avx2", "portable"):
        assert winograd.pays(1, 4 * winograd.MIN_ROWS, 1, isa) and winograd.pays(4, 32, 9, isa)  # 16 and 36 rows
        assert not winograd.pays(1, 16, 1, isa) and not winograd.pays(1, 24, 3, isa)  # 4 and 6 rows
    for d in (1, 3, 9):
        assert winograd.pays(1, 32, d, "avx2") and not winograd.pays(1, 32, d, "avx512") and not winograd.pays(1, 32, d, "portable")
    assert not winograd.pays(1, 16, 9, "avx2")  # 9 rows, 16 of 36 outputs used
    lib = native.load()
    with using("avx2"):
        assert winograd.worth(1, 32, 3, lib)
    with using("portable"):
        assert not winograd.worth(1, 32, 3, lib)
    if "avx512" in ISAS:  # AVX-512 takes the AVX2 rule exactly where its FMAs run as two halves
        with using("avx512"):
            assert winograd.worth(1, 32, 3, lib) == winograd.avx512_halves()
            assert winograd.worth(1, 4 * winograd.MIN_ROWS, 1, lib) and not winograd.worth(1, 16, 1, lib)


def test_avx512_halves_reads_the_cpu():
    """AMD family 25 (Zen 4) is the one matched: a CPU with AVX-512 whose 512-bit FMAs run as two
    halves; an unreadable /proc/cpuinfo answers False."""
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    want = "AuthenticAMD" in info and any(ln.split(":")[-1].strip() == "25" for ln in info.splitlines() if ln.startswith("cpu family"))
    assert winograd.avx512_halves() == want


def test_streaming_steps_read_the_history_in_place(monkeypatch):
    """Chunks shorter and longer than the history (6 d = 54 columns): Winograd on [history; x]
    without concatenation, the history updated after; equals the offline convolution."""
    from qwen3tts.codec.layers import StreamState

    monkeypatch.setattr(winograd, "MIN_ROWS", 1)
    calls = []
    conv = winograd.conv
    monkeypatch.setattr(winograd, "conv", lambda *a, **k: calls.append(k.get("history") is not None) or conv(*a, **k))
    torch.manual_seed(8)
    m = CausalConv1d(96, 80 + 16, 7, dilation=9)
    m.use_channels_last()
    m.state_key = "c"
    x = torch.randn(2, 96, 300)
    with torch.inference_mode():
        offline = m(x)
        st = StreamState({"c": m.new_state(2, x.device, x.dtype)})
        out, s = [], 0
        for n in [40, 1, 13, 60, 100, 86]:
            out.append(m(x[..., s : s + n], st))
            s += n
    assert calls == [False] + [True] * 6
    # other tile grids than offline: the F(4, 7) rounding of one convolution (as above), no more
    assert max_abs(torch.cat(out, dim=-1), offline) < 4e-5 * max(offline.abs().max().item(), 1.0)
    assert torch.equal(st.bufs["c"][0], x[..., -54:])


@pytest.fixture(scope="module")
def mid_codec():
    """A random codec of 768 decoder channels (768 -> 384 -> 192 -> 96 -> 48): Winograd runs in the
    9 residual units of 96..384 channels by default; and the same in float64."""
    return mid_speech_tokenizer(), mid_speech_tokenizer(torch.float64)


@pytest.mark.parametrize("isa", ISAS)
def test_codec_with_winograd_offline_and_streaming(mid_codec, monkeypatch, isa):
    tok, tok64 = mid_codec
    native.set_isa(isa)
    codes = torch.randint(0, 2048, (10, 16), generator=torch.Generator().manual_seed(0))
    ref = tok64.decoder.decode(codes.T[None])[0]
    for m in tok.decoder.modules():  # the fixture is shared: forget the U of another instruction set's run
        m.__dict__.pop("_winograd", None)
    y = tok.decode(codes)
    # the residual units; decoder[0] (40 outputs, 10 rows) stays direct, except under AVX2 and on
    # CPUs whose AVX-512 runs as two halves (winograd.worth)
    few_rows = isa == "avx2" or (isa == "avx512" and winograd.avx512_halves())
    assert sum("_winograd" in m.__dict__ for m in tok.decoder.modules()) == 9 + few_rows
    dec = tok.streaming_decoder()
    streamed = torch.cat([dec.push(codes[i : i + 1]) for i in range(10)])
    dec = tok.streaming_decoder()
    streamed3 = torch.cat([dec.push(codes[i : i + 3]) for i in range(0, 10, 3)])
    ops.bind(tok.decoder, ops.make(options.current().replace(winograd=False)), packed=True)  # the plan without Winograd
    try:
        y_direct = tok.decode(codes)
    finally:
        ops.prepare(tok.decoder, packed=True)
    err, err_direct = max_abs(y, ref), max_abs(y_direct, ref)
    assert ref.abs().max() > 0.1
    assert err < 2e-6 and err < 3 * err_direct  # measured: 3.8e-7 vs 2.2e-7 for direct convolutions
    assert max_abs(streamed, y) < 1e-5 and max_abs(streamed3, y) < 1e-5  # measured ~4e-7


def test_tiny_codec_forced_winograd_matches_the_official_decode(expected, monkeypatch):
    """Winograd in every k7 convolution of the tiny model (3..48 channels; off by default there):
    still within the 1e-4 parity of the official decode. (The tiny random vocoder amplifies
    rounding ~40x: 2.5e-5 here vs 7e-6 with direct convolutions.)"""
    from qwen3tts import SpeechTokenizer

    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_ROWS", 1)
    tok = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    wav = tok.decode(expected["decode.codes"])
    assert sum("_winograd" in m.__dict__ for m in tok.decoder.modules()) == 14  # decoder[0], 12 residual units, the last conv
    assert max_abs(wav, expected["decode.wav"]) < 1e-4
    codes = expected["decode.codes"]
    for n in (1, 5):  # 1-frame pushes: chunks shorter than the dilated histories
        dec = tok.streaming_decoder()
        streamed = torch.cat([dec.push(codes[i : i + n]) for i in range(0, codes.shape[0], n)])
        assert max_abs(streamed, wav) < 1e-4


# ------------------------------------------------------------------ few-row float32 linear
def test_few_rows_linear_equals_linear():
    """The codec decoder's linears without oneDNN: 2..24 rows in the native kernel (the seam's
    `gemm` chain native > torch)."""
    torch.manual_seed(9)
    plan = ops.make(options.current().replace(onednn=False))
    assert plan.chain("gemm") == ("w8f", "native", "torch")
    for K, N, bias in [(512, 3072, False), (100, 37, True), (16, 4, True), (33, 5, False)]:
        lin = ops.Linear(K, N, bias=bias)
        ref = torch.nn.Linear(K, N, bias=bias)
        ref.load_state_dict(lin.state_dict())
        ops.bind(lin, plan, packed=True)
        for M in (1, 2, 3, 4, 5, 9, 16, 24, 25):
            x = torch.randn(M, K) * 3
            with torch.inference_mode():
                y, y_ref = lin(x), ref(x)
            assert y.shape == y_ref.shape == (M, N)
            assert max_abs(y, y_ref) < 2e-6 * max(y_ref.abs().max().item(), 1.0)
        x3 = torch.randn(2, 3, K).transpose(0, 1)  # (3, 2, K), not contiguous: 6 rows
        with torch.inference_mode():
            assert max_abs(lin(x3), ref(x3)) < 2e-6 * max(ref(x3).abs().max().item(), 1.0)
        assert lin.state_dict().keys() == ref.state_dict().keys()


def test_codec_decoder_linears_are_bound_to_the_packed_chain(tiny_codec):
    lins = [m for m in tiny_codec.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert lins and all(type(m) is ops.Linear and m.ops_packed and m.ops_plan.chain("gemm") == ("w8f", "onednn", "native", "torch") for m in lins)


def test_few_rows_linear_refuses_what_it_does_not_serve(monkeypatch):
    from qwen3tts.native import f32

    g = torch.Generator().manual_seed(4)
    w, b = torch.randn(12, 40, generator=g), torch.randn(12, generator=g)
    for M in (f32.MIN_ROWS, 7, f32.MAX_ROWS):
        x = torch.randn(M, 40, generator=g)
        assert max_abs(f32.few_rows_linear(x, w, b), F.linear(x, w, b)) < 1e-5
    x = torch.randn(6, 40, generator=g)
    assert f32.few_rows_linear(x[:1], w, b) is None  # one row: MKL's matrix-vector product
    assert f32.few_rows_linear(torch.randn(f32.MAX_ROWS + 1, 40), w, b) is None
    assert f32.few_rows_linear(x.double(), w.double(), b.double()) is None
    assert f32.few_rows_linear(x, torch.randn(40, 12).T, b) is None  # a transposed (non-contiguous) weight
    monkeypatch.setattr(f32, "library", lambda: None)
    assert f32.few_rows_linear(x, w, b) is None


def test_codec_convolutions_run_few_rows_in_the_native_kernel(monkeypatch):
    """Without oneDNN (which serves them first: tests/test_dnn.py), a streaming step of the k7
    convolution (run as one GEMM) and of a transposed convolution sends its few rows to the
    native kernel, and the result is the torch convolution's."""
    from qwen3tts.codec.layers import CausalConvTranspose1d, StreamState
    from qwen3tts.ops import native_backend

    monkeypatch.setenv("QWEN3TTS_ONEDNN", "0")
    options.reload()
    calls = []
    real = native_backend.few_rows_linear

    def spy(x, w, bias=None, lib=None):
        y = real(x, w, bias, lib)
        calls.append((x.shape[0], y is not None))
        return y

    monkeypatch.setattr(native_backend, "few_rows_linear", spy)
    torch.manual_seed(5)
    conv, tconv = CausalConv1d(64, 48, 7), CausalConvTranspose1d(40, 24, 8, 4)
    w0 = tconv.conv.weight.detach().clone()
    conv.use_channels_last(), tconv.use_channels_last()
    assert torch.equal(tconv.conv.weight, w0) and tconv.conv.weight.permute(2, 1, 0).is_contiguous()  # same values, (k, Cout, Cin) memory
    conv.state_key, tconv.state_key = "c", "t"
    B, T = 2, 12
    x, xt = torch.randn(B, 64, T), torch.randn(B, 40, T)
    with torch.inference_mode():
        st = StreamState({"c": conv.new_state(B, "cpu", torch.float32), "t": tconv.new_state(B, "cpu", torch.float32)})
        y = torch.cat([conv(x[..., s : s + 4], st) for s in range(0, T, 4)], dim=-1)  # 3 steps of 2 x 4 rows
        z = torch.cat([tconv(xt[..., s : s + 3], st) for s in range(0, T, 3)], dim=-1)  # 4 steps of 2 x 3 rows
        y_ref = F.conv1d(F.pad(x, (6, 0)), conv.conv.weight, conv.conv.bias)
        z_ref = F.conv_transpose1d(xt, tconv.conv.weight, tconv.conv.bias, stride=4)[..., : T * 4]
    assert calls and all(ok for _, ok in calls) and {m for m, _ in calls} == {8, 6}
    assert max_abs(y, y_ref) < 1e-5 and max_abs(z, z_ref) < 1e-5


@pytest.mark.parametrize("isa", [i for i in ISAS if i in ("avx512", "avx2")] or
                         [pytest.param("avx2", marks=pytest.mark.skip(reason="the fused kernel needs AVX2 or AVX-512, this CPU has neither"))])
def test_fused_kernel_equals_float64_and_serves_up_to_192_channels(monkeypatch, isa):
    """`qwen3tts_wino_fused`: the whole convolution in L2-sized chunks (transforms + its own
    register-blocked channel mixes) for <= 192 channels; history read in place; any batch. The
    AVX2 kernel gives AVX-512's floats (the same FMA per lane, k in order)."""
    lib = native.load()
    native.set_isa(isa)
    g = torch.Generator().manual_seed(11)
    for C, cout, L, d, B in [(96, 80, 301, 9, 2), (40, 24, 50, 1, 3), (192, 192, 700, 3, 1), (8, 8, 7, 1, 1)]:
        w = torch.randn(cout, C, 7, generator=g) / math.sqrt(7 * C)
        b = torch.randn(cout, generator=g) * 0.1
        x = torch.randn(B, L, C, generator=g).transpose(1, 2)
        hist = torch.randn(B, 6 * d, C, generator=g)
        ref = F.conv1d(torch.cat([hist.transpose(1, 2), x], -1).double(), w.double(), b.double(), dilation=d)
        U = winograd.transform_weight(w)
        assert winograd.fused(C, cout, lib)
        y = winograd.conv(x, U, b, d, lib, history=hist)
        with monkeypatch.context() as mp:
            mp.setattr(winograd, "FUSED_CHUNK", 8)  # 8 tile rows per chunk: the same sums
            y8 = winograd.conv(x, U, b, d, lib, history=hist)
        with monkeypatch.context() as mp:
            mp.setattr(winograd, "FUSED_MAX_CHANNELS", 0)  # the unfused passes (torch.bmm mixes)
            assert not winograd.fused(C, cout, lib)
            y_bmm = winograd.conv(x, U, b, d, lib, history=hist)
        scale = max(ref.abs().max().item(), 1.0)
        assert y.shape == ref.shape and y.transpose(1, 2).is_contiguous()
        assert max_abs(y, ref) < 4e-5 * scale and torch.equal(y, y8)
        assert max_abs(y, y_bmm) < 2e-6 * scale
        if isa == "avx2" and "avx512" in ISAS:
            with using("avx512"):
                assert torch.equal(winograd.conv(x, U, b, d, lib, history=hist), y)
    assert not winograd.fused(384, 384, lib) and not winograd.fused(96, 384, lib)  # wide: oneDNN's mixes are faster
    with using("portable"):
        assert not winograd.fused(96, 96, lib)  # no vector kernels: the unfused passes



@pytest.mark.parametrize("isa", [i for i in ISAS if i in ("avx512", "avx2")] or
                         [pytest.param("avx2", marks=pytest.mark.skip(reason="the fused kernel needs AVX2 or AVX-512, this CPU has neither"))])
def test_fused_kernel_epilogue_is_the_rest_of_a_residual_unit(monkeypatch, isa):
    """With an epilogue the fused kernel returns res + W2 snake(conv) + b2 (a residual unit after
    its first SnakeBeta): the unfused computation's floats up to the 1x1 product's summation
    order, for any chunking (tile rows per chunk rounded to whole dilation phases), batch and
    channel count that is not a whole vector."""
    from qwen3tts.ops import reference as R

    lib = native.load()
    native.set_isa(isa)
    g = torch.Generator().manual_seed(12)
    for C, L, d, B in [(96, 301, 9, 2), (40, 50, 1, 3), (192, 700, 3, 1), (20, 9, 3, 2)]:
        w = torch.randn(C, C, 7, generator=g) / math.sqrt(7 * C)
        b = torch.randn(C, generator=g) * 0.1
        x = torch.randn(B, L, C, generator=g).transpose(1, 2)
        hist = torch.randn(B, 6 * d, C, generator=g)
        res = torch.randn(B, L, C, generator=g)
        a2, ib2 = torch.exp(torch.randn(C, generator=g) * 0.3), 1 / (torch.exp(torch.randn(C, generator=g) * 0.3) + 1e-9)
        w2, b2 = torch.randn(C, C, generator=g) / math.sqrt(C), torch.randn(C, generator=g) * 0.1  # w2: (out, in)
        U = winograd.transform_weight(w)
        conv = winograd.conv(x, U, b, d, lib, history=hist)
        want = res + R.snake(conv, a2, ib2).transpose(1, 2) @ w2.T + b2  # (B, L, C)
        epi = (res, a2, ib2, w2.T.contiguous(), b2)
        y = winograd.conv(x, U, b, d, lib, history=hist, epilogue=epi)
        assert y.shape == (B, C, L) and y.transpose(1, 2).is_contiguous()
        assert max_abs(y.transpose(1, 2), want) < 1e-5 * max(want.abs().max().item(), 1.0)
        with monkeypatch.context() as mp:
            mp.setattr(winograd, "FUSED_CHUNK", 8)  # 8 tile rows per chunk (rounded to whole phases): the same floats
            assert torch.equal(winograd.conv(x, U, b, d, lib, history=hist, epilogue=epi), y)
    with pytest.raises(ValueError, match="epilogue"):
        winograd.conv(x, U, b, d, lib, history=hist, epilogue=(res[:, 1:].contiguous(), a2, ib2, w2.T.contiguous(), b2))


def test_residual_unit_fused_equals_unfused_offline_and_streaming(monkeypatch):
    """A channels-last ResidualUnit of 96 channels: the fused kernel's epilogue serves it (one
    native pass after act1), with the unfused floats to rounding, and chunks stream exactly."""
    from qwen3tts.codec.layers import ResidualUnit, StreamState, assign_state_keys

    torch.manual_seed(9)
    unit = ResidualUnit(96, 3)
    with torch.no_grad():
        for p in unit.parameters():
            p.normal_(0, 0.1)
    for c in (unit.conv1, unit.conv2):
        c.use_channels_last()
    assign_state_keys(unit)
    new = lambda: StreamState({unit.conv1.state_key: unit.conv1.new_state(1, "cpu", torch.float32)})  # noqa: E731
    x = torch.randn(1, 400, 96).transpose(1, 2)
    if not winograd.fused(96, 96, native.load()):
        pytest.skip("the fused kernel needs AVX2 or AVX-512")
    with torch.no_grad():
        y = unit(x, new())
        assert unit._fused(unit.act1(x), x, new()) is not None
        with monkeypatch.context() as mp:
            mp.setattr(ResidualUnit, "_fused", lambda self, h, x, st: None)
            y_unfused = unit(x, new())
        assert max_abs(y, y_unfused) < 1e-6 * max(y.abs().max().item(), 1.0)
        st = new()
        streamed = torch.cat([unit(x[..., a:e], st) for a, e in ((0, 100), (100, 101), (101, 400))], dim=-1)
        assert max_abs(streamed, y) < 4e-5 * max(y.abs().max().item(), 1.0)  # Winograd tiles placed per chunk (as above)

# ------------------------------------------------------------------ transposed convolutions, F(4, 2)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cin,cout,k,s,N,B", [(192, 96, 6, 3, 701, 1), (40, 24, 8, 4, 130, 2), (16, 8, 5, 3, 61, 1), (8, 4, 2, 2, 3, 3)])
def test_transposed_conv_blocks_equal_float64(cin, cout, k, s, N, B, isa, monkeypatch):
    """The output blocks (B, N + 1, s * Cout): blocks 0..N-1 the transposed convolution of x with
    its overlap-add inside x, block N the spill; bias in every block. In pieces, packed or not."""
    native.set_isa(isa)
    g = torch.Generator().manual_seed(cin + N)
    w = torch.randn(cin, cout, k, generator=g) / math.sqrt(2 * cin)
    b = torch.randn(cout, generator=g) * 0.1
    x = torch.randn(B, N, cin, generator=g).transpose(1, 2)
    full = F.conv_transpose1d(x.double(), w.double(), stride=s)  # (B, Cout, (N - 1) s + k)
    ref = torch.zeros(B, cout, (N + 1) * s, dtype=torch.float64)
    ref[..., : full.shape[-1]] = full
    ref = (ref + b.double()[:, None]).transpose(1, 2).reshape(B, N + 1, s * cout)
    direct = F.conv_transpose1d(x, w, b, stride=s)
    scale = max(ref.abs().max().item(), 1.0)
    U = winograd.transform_transposed(w, s)
    assert U.shape == (winograd.T_TILE + 1, cin, s * cout)
    y = winograd.conv_transpose(x, U, b, native.load())
    assert y.shape == ref.shape
    err_direct = max_abs(direct, ref.view(B, N + 1, s, cout).reshape(B, (N + 1) * s, cout)[:, : direct.shape[-1]].transpose(1, 2))
    assert max_abs(y, ref) < 1e-5 * scale and max_abs(y, ref) < 8 * max(err_direct, 1e-7 * scale)  # measured 2-5x a direct product's
    monkeypatch.setattr(winograd, "PIECE_BYTES", 1)  # pieces of one tile (the mixes' GEMMs may round differently)
    monkeypatch.setattr(winograd, "T_PIECE_ROWS", 1)
    assert max_abs(winograd.conv_transpose(x, U, b, native.load()), y) < 2e-6 * scale
    from qwen3tts.native import dnn

    if dnn.enabled():
        assert max_abs(winograd.conv_transpose(x, winograd.pack_mix(U), b, native.load()), y) < 1e-5 * scale


def test_transposed_layer_uses_f42_where_it_pays_and_streams_exactly(monkeypatch):
    """A channels-last CausalConvTranspose1d: F(4, 2) from T_MIN_ROWS rows (its transformed
    weight cached), the GEMM below; pushes of any size chain their tails like one pass. Below
    MIN_CHANNELS channels the GEMM serves every size (as for the k7 convolutions)."""
    from qwen3tts.codec.layers import CausalConvTranspose1d, StreamState

    torch.manual_seed(5)
    layer = CausalConvTranspose1d(192, 96, 8, 4)
    layer.use_channels_last()
    layer.state_key = "t"
    x = torch.randn(1, 300, 192).transpose(1, 2)
    new = lambda: StreamState({"t": layer.new_state(1, "cpu", torch.float32)})  # noqa: E731
    y = layer(x, new())
    assert "_winograd_t" in layer.__dict__
    ref = F.conv_transpose1d(x.double(), layer.conv.weight.double(), layer.conv.bias.double(), stride=4)[..., : 300 * 4]
    assert max_abs(y, ref) < 1e-5
    layer.__dict__.pop("_winograd_t")
    st, outs = new(), []
    for a, e in ((0, 5), (5, 260), (260, 261), (261, 300)):  # GEMM, F(4, 2), GEMM, GEMM
        outs.append(layer(x[..., a:e], st))
    assert max_abs(torch.cat(outs, dim=-1), y) < 1e-5
    assert "_winograd_t" in layer.__dict__
    monkeypatch.setattr(winograd, "T_MIN_ROWS", 10**9)
    layer.__dict__.pop("_winograd_t")
    assert max_abs(layer(x, new()), y) < 1e-5 and "_winograd_t" not in layer.__dict__
    monkeypatch.undo()
    narrow = CausalConvTranspose1d(48, 24, 8, 4)
    narrow.use_channels_last()
    narrow.state_key = "t"
    narrow(torch.randn(1, 300, 48).transpose(1, 2), StreamState({"t": narrow.new_state(1, "cpu", torch.float32)}))
    assert "_winograd_t" not in narrow.__dict__


def test_transposed_f42_leaves_out_layers_with_a_large_transformed_weight():
    """F(4, 2) keeps a transformed weight of 5 x Cin x stride x Cout floats beside the layer's
    own: the decoder's first block (1536 -> 768, stride 8: 47 M floats) keeps its GEMM even with
    many tiles (a voice's reference priming a stream), the later blocks take F(4, 2) from
    T_MIN_ROWS tiles."""
    assert not winograd.transposed_pays(1, 4 * 400, 1536, 768, 8)
    assert winograd.transposed_pays(1, 4 * 400, 768, 384, 5) and winograd.transposed_pays(1, 4 * 400, 192, 96, 3)
    assert not winograd.transposed_pays(1, 4 * (winograd.T_MIN_ROWS - 1) - 1, 768, 384, 5)
