"""oneDNN products with packed weights (native/dnn.py): they compute the float32 product within
rounding for every row count (one packed weight serves them all), are cached per weight and
rebuilt when it changes, are left out of plans made under QWEN3TTS_ONEDNN=0, and the codec decoder routes
its products through them (the Winograd channel mixes, the transposed and GEMM-sized
convolutions, the linears) with the decoded audio unchanged to rounding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import max_abs
from qwen3tts import native, ops, options
from qwen3tts.native import dnn
from qwen3tts.ops import onednn_backend

pytestmark = pytest.mark.skipif(not dnn.enabled(), reason="torch without oneDNN")


def _rel(y, ref) -> float:
    return max_abs(y, ref) / max(ref.abs().max().item(), 1.0)


def test_packed_linear_equals_the_float64_product_at_every_row_count():
    g = torch.Generator().manual_seed(0)
    for N, K in [(96, 96), (300, 77), (17, 512)]:
        w, b = torch.randn(N, K, generator=g) / math.sqrt(K), torch.randn(N, generator=g)
        p = dnn.PackedLinear(w, rows_hint=64)
        for M in (1, 2, 5, 24, 33, 64, 257):
            x = torch.randn(M, K, generator=g)
            ref = x.double() @ w.double().T + b.double()
            y = p(x, b)
            assert y.shape == (M, N) and y.dtype == torch.float32 and y.is_contiguous()
            assert _rel(y, ref) < 2e-6
            assert _rel(p(x), ref - b.double()) < 2e-6  # no bias
            assert _rel(p(x.T.contiguous().T, b), ref) < 2e-6  # a non-contiguous input (made contiguous)
    with pytest.raises(ValueError, match="got input"):
        p(torch.randn(3, 5))
    with pytest.raises(ValueError, match="is \\(N, K\\)"):
        dnn.PackedLinear(torch.randn(2, 3, 4))


def test_linear_is_cached_per_weight_and_rebuilt_when_it_changes(monkeypatch):
    owner = torch.nn.Linear(40, 12)
    x = torch.randn(6, 40)
    y = dnn.linear(owner, "_dnn", x, owner.weight, owner.bias)
    assert max_abs(y, F.linear(x, owner.weight, owner.bias)) < 1e-5
    packed = owner.__dict__["_dnn"][1]
    dnn.linear(owner, "_dnn", torch.randn(50, 40), owner.weight, owner.bias)
    assert owner.__dict__["_dnn"][1] is packed  # one packed weight for any row count
    with torch.no_grad():
        owner.weight.mul_(-2)  # an in-place update (a checkpoint load)
    y2 = dnn.linear(owner, "_dnn", x, owner.weight, owner.bias)
    assert owner.__dict__["_dnn"][1] is not packed and max_abs(y2, F.linear(x, owner.weight, owner.bias)) < 1e-5
    # what it does not serve: None, the caller uses torch
    assert dnn.linear(owner, "_d", x.double(), owner.weight.double()) is None
    assert dnn.linear(owner, "_d", x[:, :30], owner.weight) is None
    bound = ops.Linear(40, 12)
    ops.prepare(bound)  # a model loaded while oneDNN is on keeps its plan: the option is read at load only
    monkeypatch.setenv("QWEN3TTS_ONEDNN", "0")
    options.reload()
    assert not dnn.enabled() and "onednn" not in ops.make().chain("gemm") and "onednn" not in ops.make().chain("linear")
    assert bound.ops_plan.chain("linear")[0] == "onednn" and ops.prepare(ops.Linear(40, 12)).chain("linear") == ("torch",)
    with pytest.raises(ValueError, match="QWEN3TTS_ONEDNN must be 0 or 1"):
        options.from_env({"QWEN3TTS_ONEDNN": "maybe"})


@pytest.mark.skipif(not native.available(), reason="needs the native library (a C compiler)")
def test_winograd_mixes_in_onednn_equal_the_batched_gemms():
    from qwen3tts.codec import winograd

    g = torch.Generator().manual_seed(2)
    for C, cout, L, d, B in [(96, 80, 700, 3, 2), (48, 48, 37, 1, 1)]:
        w = torch.randn(cout, C, 7, generator=g) / math.sqrt(7 * C)
        b = torch.randn(cout, generator=g)
        x = torch.randn(B, L, C, generator=g).transpose(1, 2)
        hist = torch.randn(B, 6 * d, C, generator=g)
        U = winograd.transform_weight(w)
        mixes = winograd.pack_mix(U)
        assert len(mixes) == 10 and mixes[0].shape == (cout, C)
        for h in (None, hist):
            y_bmm = winograd.conv(x, U, b, d, native.load(), history=h)
            y_dnn = winograd.conv(x, mixes, b, d, native.load(), history=h)
            assert y_dnn.shape == y_bmm.shape and y_dnn.transpose(1, 2).is_contiguous()
            assert _rel(y_dnn, y_bmm) < 2e-6
        xh = torch.cat([hist.transpose(1, 2), x], dim=-1)
        assert _rel(winograd.conv(x, mixes, b, d, native.load(), history=hist), F.conv1d(xh, w, b, dilation=d)) < 4e-5


def test_codec_decoder_routes_its_products_through_onednn(tiny_codec, monkeypatch):
    from conftest import TINY_MODEL
    from qwen3tts import SpeechTokenizer

    codes = torch.randint(0, tiny_codec.config.decoder.codebook_size, (30, 16), generator=torch.Generator().manual_seed(1))
    tok = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    y = tok.decode(codes)
    packed = [n for n, m in tok.decoder.named_modules() if "_dnn" in m.__dict__]
    kinds = {type(m).__name__ for m in tok.decoder.modules() if "_dnn" in m.__dict__}
    assert {"CausalConv1d", "CausalConvTranspose1d", "Linear"} <= kinds, kinds
    assert tok.decoder.__dict__["ops_plan"].chain("gemm") == ("w8f", "onednn", "native", "torch")
    dec = tok.streaming_decoder()
    streamed = torch.cat([dec.push(codes[i : i + 1]) for i in range(30)])
    monkeypatch.setenv("QWEN3TTS_ONEDNN", "0")
    options.reload()
    tok_off = SpeechTokenizer.from_pretrained(TINY_MODEL / "speech_tokenizer")
    y_off = tok_off.decode(codes)
    assert not any("_dnn" in m.__dict__ for m in tok_off.decoder.modules())
    assert len(packed) > 10
    assert max_abs(y, y_off) < 1e-5 and max_abs(streamed, y) < 1e-5


def test_failing_onednn_ops_fall_back_to_torch_with_one_warning(monkeypatch):
    """A torch whose oneDNN ops exist but fail: switched off for the process, torch's result."""
    owner = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16)

    def broken(*a, **k):
        raise RuntimeError("no kernel for this platform")

    monkeypatch.setattr(dnn, "PackedLinear", broken)
    monkeypatch.setattr(dnn._have_ops, "ok", True)
    with pytest.warns(RuntimeWarning, match="oneDNN products unavailable"):
        assert dnn.linear(owner, "_dnn", x, owner.weight, owner.bias) is None
    assert not dnn.enabled()  # monkeypatch restores the flag afterwards
    lin = ops.Linear(16, 8)
    ops.bind(lin, ops.make(), packed=True)  # the codec decoder's chain: oneDNN (packed) > native > torch
    assert max_abs(lin(x), F.linear(x, lin.weight, lin.bias)) < 1e-5  # the next backend serves it


def test_onednn_linear_equals_linear_and_serves_the_talker(tiny_tts, monkeypatch):
    encoder = tiny_tts.speech_tokenizer.encoder  # loaded on first use: under the options in force now
    g = torch.Generator().manual_seed(7)
    ref = torch.nn.Linear(64, 48)
    lin = ops.Linear(64, 48)
    lin.load_state_dict(ref.state_dict())
    ops.prepare(lin)
    assert lin.state_dict().keys() == ref.state_dict().keys() and lin.ops_plan.chain("linear") == ("onednn", "torch")
    calls = []
    real = onednn_backend.OPS["linear"]
    monkeypatch.setitem(onednn_backend.OPS, "linear", lambda *a: calls.append(1) or real(*a))
    lin = ops.Linear(64, 48)
    lin.load_state_dict(ref.state_dict())
    ops.bind(lin, ops.plan._choose(options.current(), torch.device("cpu"), torch.float32))  # a fresh plan: the spy
    for shape in [(1, 64), (4, 64), (2, 3, 64), (300, 64)]:
        x = torch.randn(*shape, generator=g)
        with torch.inference_mode():
            y, y_ref = lin(x), ref(x)
        assert y.shape == y_ref.shape and max_abs(y, y_ref) < 2e-6 * max(y_ref.abs().max().item(), 1.0)
    assert len(calls) == 4  # oneDNN computed them
    xt = torch.randn(3, 2, 64, generator=g).transpose(0, 1)  # not contiguous
    assert max_abs(lin(xt), ref(xt)) < 1e-5
    nb = ops.Linear(64, 8, bias=False)
    assert max_abs(nb(xt), F.linear(xt, nb.weight)) < 1e-5
    bf = ops.Linear(64, 8).to(torch.bfloat16)  # other dtypes: F.linear
    ops.prepare(bf)
    assert bf.ops_plan.chain("linear") == ("torch",) and torch.equal(bf(xt.bfloat16()), F.linear(xt.bfloat16(), bf.weight, bf.bias))
    monkeypatch.setenv("QWEN3TTS_ONEDNN", "0")
    options.reload()
    off = ops.prepare(ops.Linear(64, 48))
    assert off.chain("linear") == ("torch",) and off.chain("gemm") == ("w8f", "native", "torch")
    # the talker's and code predictor's linears (fused q/k/v and gate/up included) and the codec
    # encoder's are bound to the oneDNN plan at load
    talker = tiny_tts.talker
    lins = [m for m in talker.modules() if isinstance(m, torch.nn.Linear)]
    assert lins and all(type(m) is ops.Linear and m.ops_plan.chain("linear")[0] == "onednn" and not m.ops_packed for m in lins)
    assert talker.model.layers[0].self_attn.qkv_proj in lins
    enc = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert enc and all(type(m) is ops.Linear and m.ops_plan.chain("linear")[0] == "onednn" and not m.ops_packed for m in enc)
