"""Exact streaming decode: any split of a code sequence gives the offline samples, and every
piece of carried state is necessary."""

from __future__ import annotations

import pytest
import torch

from conftest import max_abs


def _codes(n, seed=0, size=64):
    return torch.randint(0, size, (n, 16), generator=torch.Generator().manual_seed(seed))


def _push_split(tok, codes, sizes):
    dec = tok.streaming_decoder()
    out, s, i = [], 0, 0
    while s < codes.shape[0]:
        n = sizes[i % len(sizes)]
        out.append(dec.push(codes[s : s + n]))
        s, i = s + n, i + 1
    assert dec.frames == codes.shape[0]
    return torch.cat(out)


SPLITS = [[1], [2], [3], [7], [25], [1, 4, 2, 9, 3]]

# fp32: BLAS picks other kernels for 1-3-row products and conv lengths, and the random tiny
# vocoder (Snake on inputs up to ~18) amplifies those ulp-level differences to 5e-6..1.1e-5 at
# the output -- the same floor as our offline decode vs the official one (3.7e-6). The float64
# test below shows the streaming algorithm itself is exact.
FP32_TOL = 2e-5


@pytest.mark.parametrize("sizes", SPLITS)
def test_stream_equals_offline(tiny_codec, sizes):
    codes = _codes(60)
    offline = tiny_codec.decode(codes)
    streamed = _push_split(tiny_codec, codes, sizes)
    assert streamed.shape == offline.shape == (60 * 1920,)
    assert max_abs(streamed, offline) < FP32_TOL


@pytest.fixture(scope="module")
def tiny_codec64():
    from conftest import TINY_MODEL
    from qwen3tts import SpeechTokenizer

    return SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer", dtype=torch.float64)


@pytest.mark.parametrize("sizes", SPLITS)
def test_stream_equals_offline_float64(tiny_codec64, sizes):
    codes = _codes(60)
    offline = tiny_codec64.decoder.decode(codes.T[None])[0]
    dec = tiny_codec64.decoder
    st = dec.init_state(1)
    out, s, i = [], 0, 0
    while s < 60:
        n = sizes[i % len(sizes)]
        out.append(dec.step(codes[s : s + n].T[None], st)[0])
        s, i = s + n, i + 1
    assert max_abs(torch.cat(out), offline) < 1e-10


def test_stream_longer_than_300_frames(tiny_codec):
    codes = _codes(330, seed=1)
    one_pass = tiny_codec.decoder.decode(codes.T[None], max_chunk=10_000)[0]
    assert max_abs(tiny_codec.decode(codes), one_pass) < FP32_TOL
    assert max_abs(_push_split(tiny_codec, codes, [25]), one_pass) < FP32_TOL
    assert max_abs(_push_split(tiny_codec, codes, [7, 1, 13]), one_pass) < FP32_TOL
    # the official chunking restarts from zero state at frame 300: with 25 frames of context it
    # covers the tiny model's receptive field (2 layers x window 8 + conv tail), with 2 it does not
    chunked = tiny_codec.decode(codes, chunk_size=300, left_context=25)
    assert max_abs(chunked, one_pass) < FP32_TOL
    short = tiny_codec.decode(codes, chunk_size=300, left_context=2)
    assert max_abs(short[: 300 * 1920], one_pass[: 300 * 1920]) < FP32_TOL
    assert max_abs(short, one_pass) > 1e-3


def test_reset_starts_a_new_stream(tiny_codec):
    codes = _codes(10, seed=2)
    dec = tiny_codec.streaming_decoder()
    first = torch.cat([dec.push(codes[:4]), dec.push(codes[4:])])
    dec.reset()
    assert dec.frames == 0
    again = torch.cat([dec.push(codes[:3]), dec.push(codes[3:])])
    assert max_abs(first, again) < FP32_TOL
    assert dec.push(torch.zeros(0, 16, dtype=torch.long)).numel() == 0


def test_every_state_is_necessary(tiny_codec):
    """Zeroing any one carried tensor (or the position) between pushes breaks equality."""
    codes = _codes(24, seed=3)
    offline = tiny_codec.decode(codes)
    keys = tiny_codec.decoder.state_keys()
    # pre_conv, each transformer layer's K/V ring, ConvNeXt dwconvs, decoder[0], transposed-conv
    # tails, residual-unit dilated convs, final conv
    assert len(keys) == 1 + 2 + 2 + 1 + 4 + 12 + 1
    for key in keys + ["pos"]:
        dec = tiny_codec.streaming_decoder()
        out = []
        for i in range(0, 24, 3):
            out.append(dec.push(codes[i : i + 3]))
            if key == "pos":
                dec.state.pos = 0
            else:
                for t in dec.state.bufs[key]:
                    t.zero_()
        err = max_abs(torch.cat(out), offline)
        assert err > 1e-4, f"state {key} looks unnecessary (err {err:.2e})"


def test_attention_window_is_exactly_needed(tiny_codec):
    """Keys older than the window must not matter; keys inside it must. The ring holds position
    p in slot p % R; 80 one-frame pushes wrap it twice."""
    from qwen3tts.codec.transformer import RING_CHUNK

    codes = _codes(80, seed=4)
    W = tiny_codec.config.decoder.sliding_window
    R = W - 1 + RING_CHUNK
    offline = tiny_codec.decode(codes)
    attn = [m for m in tiny_codec.decoder.modules() if type(m).__name__ == "DecoderAttention"]
    assert all(m.new_state(1, "cpu", torch.float32)[0].shape[2] == R for m in attn)
    def stream(age=None):
        # after frame i, corrupt the key of position (i + 1) - age: the oldest the next frame sees, or one older
        dec = tiny_codec.streaming_decoder()
        out = []
        for i in range(80):
            out.append(dec.push(codes[i : i + 1]))
            p = i + 1 - age if age is not None else -1
            if p >= 0:
                for m in attn:
                    for t in dec.state.bufs[m.state_key]:
                        t[:, :, p % R] = 1e3
        return torch.cat(out)

    clean = stream()
    assert max_abs(clean, offline) < FP32_TOL
    assert max_abs(stream(W - 1), clean) > 1e-4  # inside the window: it matters
    assert torch.equal(stream(W), clean)  # one older: masked out exactly


def test_ring_passes_equal_one_pass(tiny_codec, monkeypatch):
    """Chunks longer than RING_CHUNK run as several transformer passes: with a ring chunk of 2 the
    offline decode (32-frame pieces: 16 passes each) and 5-frame pushes give the same audio."""
    from qwen3tts.codec import transformer

    codes = _codes(70, seed=6)
    ref = tiny_codec.decode(codes)
    monkeypatch.setattr(transformer, "RING_CHUNK", 2)
    small = tiny_codec.decode(codes)
    dec = tiny_codec.streaming_decoder()
    assert dec.state.bufs[next(k for k in dec.state.bufs if "self_attn" in k)][0].shape[2] == tiny_codec.config.decoder.sliding_window + 1
    pushed = torch.cat([dec.push(codes[i : i + 5]) for i in range(0, 70, 5)])
    assert max_abs(small, ref) < 1e-5 and max_abs(pushed, ref) < 1e-5


def test_channels_last_path_equals_ncw_path(tiny_codec):
    """On CPU the decoder runs channels-last (convolutions as channels-last 2-D convolutions or,
    for short inputs, one GEMM over unfolded windows; transposed convolutions and stream states
    in the (time, channel) layout). The plain NCW path on the same weights gives the same audio,
    offline and streamed, and the weights keep their values and shapes."""
    from qwen3tts import SpeechTokenizer
    from qwen3tts.codec.layers import CausalConv1d, CausalConvTranspose1d
    from qwen3tts.native import dnn

    from conftest import TINY_MODEL

    convs = [m for m in tiny_codec.decoder.modules() if isinstance(m, (CausalConv1d, CausalConvTranspose1d))]
    assert convs and all(m.cl for m in convs)
    assert not tiny_codec.decoder.pre_conv.conv.weight.is_contiguous()  # re-laid as (Cout, k, Cin)
    plain = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    for m in plain.decoder.modules():
        dnn.restore(m)  # float weights again (loading keeps some only packed for oneDNN) to re-lay here
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d)):
            m.cl = False
            m.conv.weight.data = m.conv.weight.data.contiguous()
    for a, b in zip(tiny_codec.decoder.state_dict().values(), plain.decoder.state_dict().values()):
        assert torch.equal(a, b)
    codes = _codes(40, seed=3)
    assert max_abs(tiny_codec.decode(codes), plain.decode(codes)) < 1e-5
    assert max_abs(_push_split(tiny_codec, codes, [1, 3]), _push_split(plain, codes, [1, 3])) < 1e-5


def test_cpu_attention_equals_sdpa_over_the_ring():
    """The codec transformer's CPU attention (two batched GEMMs) is SDPA's, for ring masks with
    1..32 queries, batches and a mask shared by the batch."""
    import torch.nn.functional as F

    from qwen3tts.codec.transformer import _attend_cpu, additive_mask

    g = torch.Generator().manual_seed(3)
    for B, H, N, R, D, mb in [(1, 16, 1, 103, 64, 1), (4, 16, 1, 103, 64, 4), (2, 4, 32, 103, 16, 1), (3, 2, 5, 9, 8, 3)]:
        q, K, V = (torch.randn(B, H, n, D, generator=g) for n in (N, R, R))
        mask = torch.rand(mb, 1, N, R, generator=g) > 0.5
        mask[..., 0] = True  # every query sees at least one key (its own, in the decoder)
        want = F.scaled_dot_product_attention(q, K, V, attn_mask=mask)
        got = _attend_cpu(q, K, V, additive_mask(mask, q.dtype))
        assert got.shape == want.shape and (got - want).abs().max().item() < 1e-5
