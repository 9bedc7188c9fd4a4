"""The codec decoder's int8-weight products in the quantized modes (codec_quant.py, the compute
plan's w8f backend over native/w8f.py): the native product against its float64 definition on
every instruction set, streaming == offline within the mode, bounded drift against float32,
float32 modes untouched."""

from __future__ import annotations

import pytest
import torch
from native_isas import fresh_library, isas, using  # noqa: F401 (fixture)

from conftest import TINY_MODEL, batched_push_gap, max_abs
from qwen3tts import SpeechTokenizer, ops, options
from qwen3tts.codec_quant import quantize_decoder, w8_convolutions
from qwen3tts.native.stack import unpack_rows
from qwen3tts.native.w8f import W8Weight
from qwen3tts.ops import w8f_backend


def _reference64(q: W8Weight, x: torch.Tensor, bias) -> torch.Tensor:
    y = x.double() @ q.dequantized().double().T
    return y + bias.double() if bias is not None else y


@pytest.mark.parametrize("isa", isas())
def test_w8_product_matches_its_definition(isa):
    g = torch.Generator().manual_seed(0)
    with using(isa) as lib:
        for K, N, bias in ((40, 9, True), (513, 37, False), (1024, 64, True), (16, 4, True)):
            q, b = W8Weight(torch.randn(N, K, generator=g)), torch.randn(N, generator=g) if bias else None
            full = unpack_rows(q.weight_q, -(-N // 4) * 4)  # (rows padded to 4, Kp)
            assert full.shape[1] % 64 == 0 and not full[:, K:].any() and not full[N:].any()
            for M in (1, 2, 3, 4, 5, 12, 25, 33):
                x = torch.randn(M, K, generator=g)
                y = q(x, b, lib)
                ref = _reference64(q, x, b)
                assert y.shape == (M, N) and y.dtype == torch.float32
                assert (y.double() - ref).abs().max() <= 2e-6 * ref.abs().max()
                assert torch.equal(q(x[:1], b, lib), y[:1]) and torch.equal(q(x[-1:], b, lib), y[-1:])  # a row alone == in a batch
            x3 = torch.randn(2, 3, K, generator=g)  # leading dimensions kept
            assert torch.equal(q(x3, b, lib), q(x3.reshape(6, K), b, lib).reshape(2, 3, N))
            assert max_abs(q.reference(x, b), q(x, b, lib)) <= 2e-6 * q.reference(x, b).abs().max()


def test_w8_weight_quantizes_per_row():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 2.0]])
    q = W8Weight(w)
    assert torch.equal(q.int_weight(), torch.tensor([[127, -64, 32], [0, 0, 127]], dtype=torch.int8))  # round(w / (max|w| / 127))
    assert torch.allclose(q.scales, torch.tensor([1 / 127, 2 / 127]))


def _int8_owners(root):
    return [m for m in root.modules() if w8f_backend.SLOT in m.__dict__]


@pytest.fixture(scope="module")
def codecs():
    f32 = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    q = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    linears = sum(isinstance(m, ops.Linear) for m in q.decoder.modules())
    n = quantize_decoder(q.decoder, "w8a8")
    return f32, q, linears, n


def test_quantize_gives_every_decoder_linear_int8_weights(codecs):
    f32, q, linears, n = codecs
    assert linears > 0 and n > 0
    lins = [m for m in q.decoder.modules() if isinstance(m, ops.Linear)]
    convs = w8_convolutions(q.decoder)
    assert len(lins) == linears and set(_int8_owners(q.decoder)) == set(lins) | set(convs) and len(convs) == 4
    assert all(m.weight.is_meta for m in lins) and all(m.conv.weight.is_meta for m in convs)  # only the int8 copy kept
    assert not any(k in m.__dict__ for m in lins + convs for k in ("_dnn", "_dnn_source", "_winograd"))  # nor packed copies
    assert all(m.ops_plan.chain("gemm")[0] == "w8f" and m.ops_plan.leads("gemm") != "w8f" for m in lins)
    conv = q.decoder.decoder[0]  # its int8 matrix is the weight as (Cout, k * Cin), k major
    w = f32.decoder.decoder[0].conv.weight
    assert torch.allclose(conv.__dict__[w8f_backend.SLOT].dequantized(), w.permute(0, 2, 1).reshape(w.shape[0], -1),
                          atol=w.abs().max().item() / 254 + 1e-7)
    assert quantize_decoder(q.decoder, "w8a8") == 0  # already done
    other = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    for mode in (None, "none", "int8"):  # float32 decoder (the parity mode) untouched
        assert quantize_decoder(other.decoder, mode) == 0
    assert _int8_owners(other.decoder) == [] and sum(isinstance(m, ops.Linear) for m in other.decoder.modules()) == linears


def _codes(n, seed=0):
    return torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sizes", [[1], [3], [1, 4, 2, 9]])
def test_quantized_stream_equals_quantized_offline(codecs, sizes):
    _, q, _, _ = codecs
    codes = _codes(40)
    offline = q.decode(codes)
    dec, out, s, i = q.streaming_decoder(), [], 0, 0
    while s < 40:
        out.append(dec.push(codes[s : s + sizes[i % len(sizes)]]))
        s, i = s + sizes[i % len(sizes)], i + 1
    assert max_abs(torch.cat(out), offline) < 2e-5  # the float32 streaming tolerance (test_codec_streaming)


def test_quantized_drift_is_bounded(codecs):
    f32, q, _, _ = codecs
    codes = _codes(40, seed=1)
    a, b = f32.decode(codes), q.decode(codes)
    snr = 10 * torch.log10(a.pow(2).sum() / (a - b).pow(2).sum())
    # the tiny random vocoder amplifies differences (Snake on inputs up to ~18): measured 28 dB,
    # max abs 0.09 here; the full-size random codec 62 dB, 8e-4 (docs/benchmarks.md)
    assert 0 < max_abs(a, b) < 0.2
    assert snr > 22, snr


@pytest.mark.parametrize("mode", ["w4a8", None])
def test_model_loads_with_the_codec_quantized_in_its_mode(mode):
    from qwen3tts import Qwen3TTS

    tts = Qwen3TTS.from_pretrained(TINY_MODEL, quantize=mode)
    dec = tts.speech_tokenizer.decoder
    w8 = len(_int8_owners(dec))
    assert (w8 == sum(isinstance(m, ops.Linear) for m in dec.modules()) + 4) if mode else w8 == 0
    wav = tts.speech_tokenizer.decode(_codes(3))
    assert wav.shape == (3 * 1920,) and torch.isfinite(wav).all() and wav.abs().max() > 0


def test_quantized_batched_push_equals_separate_pushes(codecs):
    _, q, _, _ = codecs
    assert batched_push_gap(q, [_codes(6, seed=s) for s in (2, 3, 4)]) < 2e-5


def test_w8f_backend_without_the_native_library_is_its_definition():
    g = torch.Generator().manual_seed(5)
    owner = ops.Linear(40, 24)
    ops.bind(owner, ops.make(), packed=True)
    assert ops.keep_int8(owner, owner) == 40 * 24 and owner.weight.is_meta
    q = owner.__dict__[w8f_backend.SLOT]
    x = torch.randn(3, 40, generator=g)
    off = ops.make(options.current().replace(native="off"))  # the plan chosen without the library
    assert off.lib is None and off.chain("gemm")[0] == "w8f"
    y = off.run("gemm", owner, x, owner.weight, owner.bias)
    assert torch.equal(y, q.reference(x, owner.bias))
    assert max_abs(owner(x), y) <= 2e-6 * y.abs().max()  # its own plan (the library where it builds)
    assert off.run("gemm", ops.Linear(40, 24), x, torch.ones(24, 40), None) is not None  # a float weight: the next backend
    bf = ops.Linear(40, 24).bfloat16()
    ops.prepare(bf)
    assert ops.keep_int8(bf, bf) == 0 and not bf.weight.is_meta  # no w8f backend in a bfloat16 plan
