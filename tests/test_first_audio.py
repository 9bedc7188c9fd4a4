"""What a request computes before its first audio, done once where it can be: the prompt's
constant text vectors (prompt.constant_text) and the native prefill's cache pointers."""

from __future__ import annotations

import ctypes

import pytest
import torch

from qwen3tts.prompt import build_prompt, constant_text


def _uncached_prompt(tts, text, voice):
    """`Qwen3TTS._prompt` with every text vector projected on the spot (the code before the
    constants were kept): the reference the cached prompt must equal bit for bit."""
    import qwen3tts.prompt as P

    def fresh(talker, ids):
        return talker.text_embed(torch.tensor(ids, dtype=torch.long))

    saved = P.constant_text
    P.constant_text = fresh
    try:
        return tts._prompt(text, "English", voice, False)
    finally:
        P.constant_text = saved


@pytest.mark.parametrize("mode", ["xvector", "icl", "none"])
def test_prompt_equals_uncached(tiny_tts, tiny_icl_voice, mode):
    from dataclasses import replace

    voice = {"icl": tiny_icl_voice, "none": None,
             "xvector": replace(tiny_icl_voice, ref_codes=None, mode="xvector")}[mode]
    for text in ("Hello there, this is a test.", "Bonjour."):
        ref = _uncached_prompt(tiny_tts, text, voice)
        for _ in range(2):  # the first call fills the constants, the second reads them
            got = tiny_tts._prompt(text, "English", voice, False)
            assert torch.equal(got.prefill, ref.prefill)
            assert torch.equal(got.trailing, ref.trailing)
            assert torch.equal(got.tts_pad, ref.tts_pad)
            assert got.shared == ref.shared
            assert got.prefill.shape[0] > 5


def test_constants_follow_the_weights(tiny_tts):
    """Changing the projection's weights in place (a reload) gives the new vectors, not the kept ones."""
    talker = tiny_tts.talker
    ids = [1, 2, 3]
    before = constant_text(talker, ids).clone()
    assert constant_text(talker, ids) is constant_text(talker, ids)  # kept
    bias = talker.text_projection.linear_fc2.bias
    old = bias.detach().clone()
    try:
        with torch.no_grad():
            bias.add_(1.0)
        after = constant_text(talker, ids)
        assert torch.allclose(after, before + 1.0, atol=1e-5)
        assert torch.equal(after, talker.text_embed(torch.tensor(ids)))
    finally:
        with torch.no_grad():
            bias.copy_(old)
    assert torch.equal(constant_text(talker, ids), before)


def test_build_prompt_needs_the_template(tiny_tts):
    with pytest.raises(ValueError):
        build_prompt(tiny_tts.talker, tiny_tts.config, [1, 2, 3], "English")


def test_native_pointers_address_each_rows_slab():
    """`NativeStack._pointers`: row b * T + t of layer l is batch row b's (Hkv, S, D) slab."""
    from qwen3tts.model.layers import KVCache
    from qwen3tts.native.stack import NativeStack

    cache = KVCache(3, 2, 2, 16, 8, "cpu", torch.float32)
    stack = NativeStack.__new__(NativeStack)
    stack.n_layers = 3
    kp, vp, smax = NativeStack._pointers(stack, cache, 2, 5)
    assert list(smax) == [16] * 10
    for arr, ts in ((kp, cache.k), (vp, cache.v)):
        assert len(arr) == 3 * 10
        want = [t[b].data_ptr() for t in ts for b in range(2) for _ in range(5)]
        assert [ctypes.c_int64(a).value for a in arr] == want
    assert NativeStack._pointers(stack, cache, 2, 5)[0] is kp  # built once per cache and shape


@pytest.mark.parametrize("path", ["eager", "static", "native"])
def test_unwritten_cache_slots_are_never_read(tiny_tts, tiny_icl_voice, monkeypatch, path):
    """A session's talker cache is not zero filled (`zeroed=False`): fill its unwritten slots
    with NaN and the codes and audio stay those of a zero-filled cache, on the eager path,
    through the fixed-shape batch it joins, and in the native w8a8 decode stack."""
    from qwen3tts.model.layers import Transformer

    static = path == "static"
    if path == "native":
        from qwen3tts import Qwen3TTS, native
        from tests.conftest import TINY_MODEL

        if not native.available():
            pytest.skip("the native library is not built here")
        tiny_tts = Qwen3TTS.from_pretrained(TINY_MODEL, quantize="w8a8")
        assert tiny_tts.talker.model.native is not None

    kw = dict(language="English", voice=tiny_icl_voice, do_sample=False, subtalker_dosample=False, max_new_tokens=12)
    tiny_tts.set_cuda_graphs("on" if static else "off")
    try:
        ref = tiny_tts.generate("Hello there.", **kw)
        made = []
        orig = Transformer.new_cache

        def nan_cache(self, batch, max_len, device=None, dtype=None, zeroed=True):
            c = orig(self, batch, max_len, device, dtype, zeroed)
            if not zeroed:
                for t in c.k + c.v:
                    t.fill_(float("nan"))
                made.append(c)
            return c

        monkeypatch.setattr(Transformer, "new_cache", nan_cache)
        got = tiny_tts.generate("Hello there.", **kw)
    finally:
        tiny_tts.set_cuda_graphs("off")
    assert made  # the session cache was one of them
    assert ref.codes.shape[0] > 2
    assert torch.equal(got.codes, ref.codes)
    assert torch.equal(got.audio, ref.audio)
