"""CUDA-graph decoding (`qwen3tts.cuda_graph`): the static, fixed-shape steps that get captured.

On CPU the static steps run eagerly: they must reproduce `FrameGenerator` (greedy and seeded
sampling: the noise pre-drawn into static buffers follows the eager draw order) and the streaming
codec. On a GPU the captured graphs must equal the eager static steps (those tests need CUDA and
are collected only where it exists)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_MODEL, max_abs
from qwen3tts import Qwen3TTS
from qwen3tts.cuda_graph import CodecGraph, StaticDecoder


@pytest.fixture(scope="module")
def tts(tiny_tts):
    return tiny_tts


@pytest.fixture(scope="module")
def voice(tiny_icl_voice):
    return tiny_icl_voice


def _eager_frames(tts, prompt, settings):
    st = tts.generator.start(prompt, settings)
    return torch.stack(list(tts.generator.frames(st))), st


def _static_frames(dec, prompt, settings):
    dec.start(prompt, settings)
    out = []
    while (f := dec.next_frame()) is not None:
        out.append(f)
    return torch.stack(out)


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_static_steps_equal_frame_generator(tts, voice, sample):
    kw = dict(max_new_tokens=12, seed=7) if sample else dict(do_sample=False, subtalker_dosample=False, max_new_tokens=12)
    settings = tts.settings(**kw)
    dec = StaticDecoder(tts.talker, tts.config.talker.codec_eos_token_id, capacity=256, graphs=False)
    for text, v in [("Hello from the static decoder.", voice), ("A second session reuses the buffers.", None)]:
        prompt = tts._prompt(text, "English", v, False)
        want, st = _eager_frames(tts, prompt, settings)
        got = _static_frames(dec, prompt, settings)
        assert got.shape[0] >= 1 and torch.equal(got, want)
        assert dec.stopped_by_eos == st.stopped_by_eos and int(dec.pos) == st.pos


def test_static_decoder_rejects_too_long(tts):
    dec = StaticDecoder(tts.talker, tts.config.talker.codec_eos_token_id, capacity=32, graphs=False)
    with pytest.raises(ValueError, match="static cache"):
        dec.start(tts._prompt("Hello.", "English", None, False), tts.settings(max_new_tokens=100))


def test_codec_graph_step_equals_streaming_decoder(tts):
    tok = tts.speech_tokenizer
    codes = torch.randint(0, 64, (9, 16), generator=torch.Generator().manual_seed(3))
    cg = CodecGraph(tok, n=1, graphs=False)
    ref = tok.streaming_decoder()
    got = torch.cat([cg.push(codes[i : i + 1]) for i in range(9)])
    want = torch.cat([ref.push(codes[i : i + 1]) for i in range(9)])
    assert max_abs(got, want) < 1e-6 and int(cg.state.pos) == 9
    # as close to the offline decode as the streaming decoder is (streaming == offline within
    # 1e-5 is tested in test_codec_streaming; on this random tiny codec float32 rounding grows
    # ~40x through the layers, which puts that distance at 4e-6..1.04e-5 depending on the codes)
    off = tok.decode(codes)
    assert max_abs(got, off) <= max_abs(want, off) + 1e-6 < 2e-5
    with pytest.raises(ValueError, match="chunks of shape"):
        cg.push(codes[:2])


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_graph_replay_equals_eager_on_gpu(sample):
    tts = Qwen3TTS.from_pretrained(TINY_MODEL, device="cuda")
    kw = dict(max_new_tokens=20, seed=3) if sample else dict(do_sample=False, subtalker_dosample=False, max_new_tokens=20)
    settings = tts.settings(**kw)
    prompt = tts._prompt("Graphs on the GPU.", "English", None, False)
    eos = tts.config.talker.codec_eos_token_id
    eager = _static_frames(StaticDecoder(tts.talker, eos, capacity=256, graphs=False), prompt, settings)
    graphed = _static_frames(StaticDecoder(tts.talker, eos, capacity=256, graphs=True), prompt, settings)
    assert torch.equal(eager, graphed)
    cg, ref = CodecGraph(tts.speech_tokenizer, graphs=True), tts.speech_tokenizer.streaming_decoder()
    for i in range(eager.shape[0]):
        assert max_abs(cg.push(eager[i : i + 1]), ref.push(eager[i : i + 1])) < 1e-4
