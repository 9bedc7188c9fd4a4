"""The quantized codec's int16 Winograd mixes (codec_quant.py, ops/winograd_backend.py
`keep_int16`, native/w8f.py `W16Weight` over codec.c `qwen3tts_linear_w16f`): the native product
against its float64 definition on every instruction set, a row's result independent of the
others, and on a codec wide enough for them: which layers keep them, streaming against offline,
batched against single streams, and the drift they add."""

from __future__ import annotations

import pytest
import torch
from native_isas import fresh_library, isas, using  # noqa: F401 (fixture)

from conftest import batched_push_gap, max_abs, mid_speech_tokenizer
from qwen3tts import native, ops
from qwen3tts.codec.layers import CausalConv1d
from qwen3tts.codec_quant import quantize_decoder
from qwen3tts.native.w8f import W16Batch, W16Weight
from qwen3tts.ops import winograd_backend


@pytest.mark.parametrize("isa", isas())
@pytest.mark.parametrize("K, N, bias", [(40, 9, True), (513, 37, False), (384, 384, True), (7, 16, True)])
def test_w16_product_matches_its_definition(isa, K, N, bias):
    g = torch.Generator().manual_seed(K)
    q, b = W16Weight(torch.randn(N, K, generator=g)), torch.randn(N, generator=g) if bias else None
    x = torch.randn(200, K, generator=g)
    with using(isa) as lib:
        full = q(x, b, lib)  # 200 rows: three chunks of the pre-converted panels
        ref = x.double() @ q.dequantized().double().T + (b.double() if bias else 0)
        assert full.shape == (200, N) and full.dtype == torch.float32
        assert (full.double() - ref).abs().max() <= 2e-6 * ref.abs().max()
        assert max_abs(q.reference(x, b), full) <= 2e-6 * ref.abs().max()
        for M in (1, 2, 5, 6, 7, 12, 13, 97):  # in-block conversion (<= 12 rows) and panels: a row's sums do not change
            assert torch.equal(q(x[:M], b, lib), full[:M]) and torch.equal(q(x[-M:], b, lib), full[-M:])
        assert torch.equal(q(x[:6].reshape(2, 3, K), b, lib), full[:6].reshape(2, 3, N))  # leading dimensions kept


def test_w16_product_is_the_same_on_avx2_and_avx512():
    have = isas()
    if not {"avx2", "avx512"} <= set(have):
        pytest.skip(f"needs both AVX2 and AVX-512 kernels (this CPU: {have})")
    g = torch.Generator().manual_seed(1)
    q, x, b = W16Weight(torch.randn(200, 300, generator=g)), torch.randn(40, 300, generator=g), torch.randn(200, generator=g)
    with using("avx2") as lib:
        y2 = q(x, b, lib)
    with using("avx512") as lib:
        y5 = q(x, b, lib)
    assert torch.equal(y2, y5)  # one multiply-add chain per output, in k order, on both


@pytest.mark.parametrize("isa", isas())
def test_w16_batch_is_the_separate_products(isa):
    g = torch.Generator().manual_seed(2)
    ws = [W16Weight(torch.randn(40, 33, generator=g)) for _ in range(5)]
    batch = W16Batch(ws)
    with using(isa) as lib:
        for M in (1, 9, 30):
            x = torch.randn(5, M, 33, generator=g)
            y = batch(x, lib)
            assert y.shape == (5, M, 40)
            assert all(torch.equal(y[i], w(x[i], None, lib)) for i, w in enumerate(ws))  # the same sums as one by one
        assert max_abs(batch(x, None), y) <= 2e-6 * y.abs().max()  # its torch definition
    with pytest.raises(ValueError):
        batch(torch.randn(4, 3, 33), lib)
    with pytest.raises(ValueError):
        W16Batch([ws[0], W16Weight(torch.randn(40, 32))])


def test_w16_weight_quantizes_per_row():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 2.0]])
    q = W16Weight(w)
    assert torch.equal(q.int_weight(), torch.tensor([[32767, -16384, 8192], [0, 0, 32767]], dtype=torch.int16))
    assert torch.allclose(q.scales, torch.tensor([1 / 32767, 2 / 32767]))
    assert q.shape == (2, 3) and q.panels.shape == (1, 3, 16) and not q.panels[:, :, 2:].any()  # one panel, zero past N


@pytest.fixture(scope="module")
def mid():
    """The 768-channel codec in float32, and quantized as `w8a8` does it, with and without the
    int16 mixes (the latter: the float transformed weights it replaces)."""
    f32, q, q_float_u = mid_speech_tokenizer(), mid_speech_tokenizer(), mid_speech_tokenizer()
    n = quantize_decoder(q.decoder, "w8a8")
    keep = ops.keep_int16_transformed
    ops.keep_int16_transformed = lambda *a: 0
    try:
        n_float_u = quantize_decoder(q_float_u.decoder, "w8a8")
    finally:
        ops.keep_int16_transformed = keep
    return f32, q, q_float_u, n - n_float_u


def _codes(n, seed=0):
    return torch.randint(0, 2048, (n, 16), generator=torch.Generator().manual_seed(seed))


def test_wide_k7_convolutions_keep_only_int16_transformed_weights(mid):
    f32, q, _, n16 = mid
    kept = [m for m in q.decoder.modules() if winograd_backend.W16_SLOT in m.__dict__]
    # the three 384-channel residual units' k7 convolutions (192 and fewer: the fused float kernel)
    wide = [m for m in q.decoder.modules() if isinstance(m, CausalConv1d) and m.conv.kernel_size[0] == 7 and m.conv.in_channels == 384]
    assert len(wide) == 3 and kept == wide and n16 == 3 * 384 * 384 * 7
    for m in kept:
        mixes = m.__dict__[winograd_backend.W16_SLOT]
        assert len(mixes) == 10 and all(x.shape == (384, 384) for x in mixes)
        assert m.conv.weight.is_meta and "_winograd" not in m.__dict__  # nor the float transformed copy
    # the values are the float transformed weight's to int16 rounding
    from qwen3tts.codec import winograd

    m = kept[0]
    name = next(k for k, v in q.decoder.named_modules() if v is m)
    U = winograd.transform_weight(f32.decoder.get_submodule(name).conv.weight.detach())
    for u, mix in zip(U, m.__dict__[winograd_backend.W16_SLOT]):
        assert (mix.dequantized().T - u).abs().max() <= u.abs().max() / 65534 * 1.01  # half a step of the largest column
    assert quantize_decoder(q.decoder, "w8a8") == 0  # already done


@pytest.mark.parametrize("isa", isas())
def test_int16_mixes_stream_like_offline_and_add_little_drift(mid, isa):
    f32, q, q_float_u, _ = mid
    native.set_isa(isa)
    codes = _codes(12)
    offline = q.decode(codes)
    dec = q.streaming_decoder()
    one = torch.cat([dec.push(codes[i : i + 1]) for i in range(12)])
    dec = q.streaming_decoder()
    three = torch.cat([dec.push(codes[i : i + 3]) for i in range(0, 12, 3)])
    peak = offline.abs().max().item()
    assert peak > 0.05
    # other tile grids than offline: the int16 rounding of the transformed weights makes a tile's
    # outputs depend on where the tile starts, at that rounding's size (measured 1.2e-5 here,
    # 1.5e-5 on the full-size random codec: docs/benchmarks.md); float32 transformed weights 3e-7
    assert max_abs(one, offline) < 3e-5 and max_abs(three, offline) < 3e-5
    ref = q_float_u.decode(codes)
    assert max_abs(offline, ref) < 1e-4  # the int16 rounding against the float transformed weights
    drift = max_abs(f32.decode(codes), offline)  # the mode's drift from float32 (its int8 weights)
    assert max_abs(offline, ref) < drift / 10


def test_int16_mixes_batched_push_equals_separate_pushes(mid):
    _, q, _, _ = mid
    # the same tiles per stream, and the product's rows independent of each other
    assert batched_push_gap(q, [_codes(4, seed=s) for s in (2, 3)]) < 2e-6
