"""The codec decoder transformer's pass (projections, layers, final norm) in one native call in the quantized modes (the seam's
`window_stack` op: ops/window_backend.py, native/codec_stack.py, codec.c `qwen3tts_codec_stack`)
against the same layers as torch ops, on every instruction set: passes of 1..32 frames and longer
(several passes), across the ring's wrap and the cached RoPE table's end, per-row positions of
stacked sessions, grouped key / value heads and biases; and that it declines float weights (the
float32 parity mode keeps its torch ops)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from native_isas import fresh_library, isas, using  # noqa: F401 (fixture)

from conftest import max_abs
from qwen3tts import ops
from qwen3tts.codec.layers import StreamState, assign_state_keys
from qwen3tts.codec.transformer import ROPE_TABLE_MAX, DecoderTransformer
from qwen3tts.config import CodecDecoderConfig

ISAS = isas()
pytestmark = pytest.mark.skipif(not ISAS, reason="the native library does not build here")


def _transformer(quantized: bool, **kw) -> DecoderTransformer:
    dims = dict(latent_dim=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                head_dim=16, sliding_window=8)
    cfg = dataclasses.replace(CodecDecoderConfig(codebook_dim=32), **{**dims, **kw})
    g = torch.Generator().manual_seed(0)
    tr = DecoderTransformer(cfg).eval().requires_grad_(False)
    for name, p in tr.named_parameters():  # norms and layer scales away from 1, products of order 1
        p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g) if p.dim() == 1 and "bias" not in name
                else torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    tr.fuse()
    ops.prepare(tr, packed=True)
    if quantized:
        assert sum(ops.keep_int8(m, m) for m in tr.modules() if isinstance(m, ops.Linear)) > 0
    assign_state_keys(tr)
    return tr


def _state(tr, batch: int) -> StreamState:
    return StreamState({layer.self_attn.state_key: layer.self_attn.new_state(batch, "cpu", torch.float32) for layer in tr.layers})


def _copy(st: StreamState) -> StreamState:
    c = StreamState({k: [t.clone() for t in ts] for k, ts in st.bufs.items()})
    c.pos = st.pos if isinstance(st.pos, int) else list(st.pos)
    return c


def _layers_as_ops(tr, x, st):
    """The pass as the transformer's torch layers compute it (the oracle), in ring-chunk pieces."""
    from qwen3tts.codec.transformer import RING_CHUNK

    outs = []
    for s in range(0, x.shape[1], RING_CHUNK):
        xs, pos = x[:, s : s + RING_CHUNK], st.pos + s if isinstance(st.pos, int) else [p + s for p in st.pos]
        if isinstance(pos, int):
            cos, sin, mask, slots = tr._host_context(pos, xs.shape[1], xs.device, xs.dtype)
        else:
            cos, sin, mask, slots = tr._context(torch.as_tensor(pos).reshape(-1, 1), xs.shape[1], xs.dtype)
        h = tr.input_proj(xs)
        for layer in tr.layers:
            h = layer(h, cos, sin, mask, slots, st)
        outs.append(tr.output_proj(tr.norm(h)))
    return torch.cat(outs, dim=1)


def _served(tr) -> bool:
    x = torch.zeros(1, 1, tr.cfg.latent_dim)
    cos = sin = torch.zeros(1, 1, tr.cfg.head_dim)
    st = _state(tr, 1)
    return ops.window_stack(tr, x, 0, [st.bufs[layer.self_attn.state_key] for layer in tr.layers], lambda: (cos, sin)) is not None


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kw", [{}, {"num_key_value_heads": 2, "attention_bias": True}])
def test_native_stack_equals_the_torch_layers(isa, kw):
    tr = _transformer(True, **kw)
    g = torch.Generator().manual_seed(1)
    with using(isa), torch.inference_mode():
        assert tr.ops_plan.chain("window_stack") == ("window",) and _served(tr)
        a = _state(tr, 2)
        b = _copy(a)
        for n in (5, 1, 1, 32, 3, 1, 40, 1, 1, 7, 1, 1):  # the ring (R = 39 slots) wraps several times
            x = torch.randn(2, n, tr.cfg.latent_dim, generator=g)
            want = _layers_as_ops(tr, x, b)
            got = tr(x, a)
            assert got.shape == want.shape and max_abs(got, want) <= 1e-5 * want.abs().max(), (n, max_abs(got, want))
            for k in a.bufs:  # the rings written alike
                assert all(max_abs(s, t) <= 1e-5 * t.abs().max() for s, t in zip(a.bufs[k], b.bufs[k]))
            a.advance(n)
            b.advance(n)
        a.pos = b.pos = ROPE_TABLE_MAX - 3  # past the cached RoPE rows: computed per pass
        x = torch.randn(2, 6, tr.cfg.latent_dim, generator=g)
        want = _layers_as_ops(tr, x, b)
        assert max_abs(tr(x, a), want) <= 1e-5 * want.abs().max()


@pytest.mark.parametrize("isa", ISAS)
def test_native_stack_with_per_row_positions(isa):
    tr = _transformer(True)
    g = torch.Generator().manual_seed(2)
    with using(isa), torch.inference_mode():
        rows = [_state(tr, 1) for _ in range(3)]
        for i, st in enumerate(rows):  # sessions at different positions (one not yet through a window)
            for _ in range(3 + 17 * i):
                tr(torch.randn(1, 1, tr.cfg.latent_dim, generator=g), st)
                st.advance(1)
        alone = [_copy(st) for st in rows]
        for n in (1, 1, 4):
            x = torch.randn(3, n, tr.cfg.latent_dim, generator=g)
            st = StreamState.stack(rows)
            assert isinstance(st.pos, list)
            got = tr(x, st)
            st.advance(n)
            StreamState.unstack(st, rows)
            want = torch.cat([_layers_as_ops(tr, x[i : i + 1], s) for i, s in enumerate(alone)])
            for s in alone:
                s.advance(n)
            assert max_abs(got, want) <= 1e-5 * want.abs().max()


def test_float_weights_are_not_served():
    tr = _transformer(False)
    assert tr.ops_plan.chain("window_stack") == ("window",) and not _served(tr)  # float32: the layers' torch ops


def test_quantized_codec_runs_its_transformer_in_one_call():
    """A codec loaded and quantized as the model does it takes the native pass (so the quantized
    codec tests, tests/test_codec_quant.py, check it end to end); the float32 one does not."""
    from conftest import TINY_MODEL
    from qwen3tts import SpeechTokenizer
    from qwen3tts.codec_quant import quantize_decoder

    q, f32 = (SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer") for _ in range(2))
    assert quantize_decoder(q.decoder, "w8a8") > 0
    assert _served(q.decoder.pre_transformer) and not _served(f32.decoder.pre_transformer)
