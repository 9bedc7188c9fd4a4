"""End-to-end parity with the official implementation on the tiny fixture: speaker encoder,
voice prompts, prompt layout, talker and code predictor stage by stage, greedy codes, waveform,
and streaming == generate."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY, TINY_MODEL, max_abs, rel_err
from qwen3tts import Qwen3TTS, VoicePrompt
from qwen3tts.model.speaker_encoder import log_mel, slaney_mel_filterbank

GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=30)


@pytest.fixture(scope="module")
def tts():
    return Qwen3TTS.from_pretrained(TINY_MODEL)


@pytest.fixture(scope="module")
def voices(tts, expected, expected_info):
    wav = expected["ref.wav"].numpy()
    ref_text = expected_info["texts"]["ref"]["text"]
    return {
        "icl": tts.create_voice_prompt((wav, 24000), ref_text=ref_text),
        "x_vector_only": tts.create_voice_prompt((wav, 24000), x_vector_only=True),
    }


def test_mel_and_filterbank(expected):
    assert max_abs(slaney_mel_filterbank(24000, 1024, 128, 0, 12000), expected["mel.filterbank"]) < 1e-6
    assert rel_err(log_mel(expected["ref.wav"]), expected["ref.mel"]) < 1e-4


def test_speaker_embedding(tts, expected):
    emb = tts.speaker_embedding(expected["ref.wav"], 24000)
    assert emb.shape == (48,)
    assert rel_err(emb, expected["ref.spk_embedding"]) < 1e-4


def test_voice_prompt(voices, expected):
    icl, xv = voices["icl"], voices["x_vector_only"]
    assert torch.equal(icl.ref_codes, expected["ref.codes"])
    assert icl.mode == "icl" and xv.mode == "xvector" and xv.ref_codes is None
    assert abs(icl.ref_seconds - 3.0) < 1e-9


def test_voice_save_load(voices, tmp_path):
    for v in voices.values():
        p = v.save(tmp_path / f"{v.mode}.safetensors")
        w = VoicePrompt.load(p)
        assert w.mode == v.mode and w.ref_text == v.ref_text and torch.equal(w.speaker_embedding, v.speaker_embedding)
        assert (w.ref_codes is None) == (v.ref_codes is None)
        if v.ref_codes is not None:
            assert torch.equal(w.ref_codes, v.ref_codes)
    (tmp_path / "junk.safetensors").write_bytes(b"not a voice")
    with pytest.raises(ValueError, match="not a"):
        VoicePrompt.load(tmp_path / "junk.safetensors")


def test_icl_needs_transcript(tts, expected):
    with pytest.raises(ValueError, match="ref_text"):
        tts.create_voice_prompt((expected["ref.wav"].numpy(), 24000))


CASES = ["icl", "icl_nonstream", "xvec", "xvec_nonstream", "icl_short_auto"]


@pytest.fixture(scope="module")
def generations(tts, voices, expected_info):
    out = {}
    for name in CASES:
        case = expected_info["generation"][name]
        voice = voices["icl" if case["mode"] == "icl" else "x_vector_only"]
        out[name] = tts.generate(case["text"], language=case["language"], voice=voice,
                                 non_streaming_mode=case["non_streaming_mode"], trace=True, **GREEDY)
    return out


@pytest.mark.parametrize("name", CASES)
def test_generation_parity(generations, expected, expected_info, name):
    out, p, case = generations[name], f"gen.{name}.", expected_info["generation"][name]
    tr = out.trace
    n = case["num_frames"]
    assert torch.equal(out.codes, expected[p + "codes"])
    assert out.stopped_by_eos == case["stopped_by_eos"]
    assert tr["prefill_embeds"].shape[0] == case["prefill_length"]
    assert rel_err(tr["prefill_embeds"], expected[p + "prefill_embeds"]) < 1e-4
    assert rel_err(tr["trailing_text_hidden"], expected[p + "trailing_text_hidden"]) < 1e-4
    assert rel_err(tr["talker_logits"][0], expected[p + "prefill_logits_last"]) < 1e-4
    assert rel_err(tr["talker_logits"], expected[p + "talker_logits"]) < 1e-4
    assert rel_err(tr["step_inputs"], expected[p + "step_inputs_embeds"]) < 1e-4
    assert rel_err(tr["talker_hidden"][:n], expected[p + "talker_hidden"]) < 1e-4
    assert rel_err(tr["cp_logits"], expected[p + "cp_logits"][:n]) < 1e-4
    assert out.audio.shape == expected[p + "wav"].shape
    assert max_abs(out.audio, expected[p + "wav"]) < 1e-4


def test_max_new_tokens_semantics(tts, voices):
    """M tokens -> at most M-1 frames (the last c0 gets no sub-codes); a warning says so."""
    out = tts.generate("Hello there, how are you?", language="English", voice=voices["x_vector_only"], **dict(GREEDY, max_new_tokens=5))
    assert out.codes.shape == (4, 16) and not out.stopped_by_eos and out.warnings
    one = tts.generate("Hi", voice=voices["x_vector_only"], **dict(GREEDY, max_new_tokens=1))
    assert one.codes.shape == (0, 16) and one.audio.numel() == 0


@pytest.mark.parametrize("name,fpc", [("icl", 1), ("icl", 4), ("xvec", 1), ("icl_short_auto", 3)])
def test_stream_equals_generate(tts, voices, generations, expected_info, name, fpc):
    case = expected_info["generation"][name]
    voice = voices["icl" if case["mode"] == "icl" else "x_vector_only"]
    chunks = list(tts.stream(case["text"], language=case["language"], voice=voice, non_streaming_mode=case["non_streaming_mode"],
                             frames_per_chunk=fpc, **GREEDY))
    n = case["num_frames"]
    assert [c.audio.shape[0] for c in chunks[:-1]] == [fpc * 1920] * (len(chunks) - 1)
    assert 0 < chunks[-1].audio.shape[0] <= fpc * 1920
    assert torch.equal(torch.cat([c.codes for c in chunks]), generations[name].codes)
    audio = torch.cat([c.audio for c in chunks])
    assert audio.shape[0] == n * 1920
    ref = generations[name].audio
    off = ref.shape[0] - audio.shape[0]  # the official proportional ICL cut may keep 1 extra sample
    assert off in (0, 1)
    assert max_abs(audio, ref[off:]) < 1e-5


def test_no_reference_mode(tts):
    out = tts.generate("Hello there.", language="English", voice=None, **dict(GREEDY, max_new_tokens=6))
    assert out.codes.shape == (5, 16) and out.audio.shape == (5 * 1920,)


def test_language_validation(tts, voices):
    with pytest.raises(ValueError, match="supported: auto, .*English"):
        tts.generate("Hi", language="Klingon", voice=voices["x_vector_only"], **GREEDY)
    assert tts.languages[0] == "auto" and "Chinese" in tts.languages
    with pytest.raises(ValueError, match="empty"):
        tts.generate("   ", voice=voices["x_vector_only"], **GREEDY)


def test_sampling_is_seeded(tts, voices):
    kw = dict(max_new_tokens=12, seed=1234)
    a = tts.generate("Sampling test sentence.", language="English", voice=voices["icl"], **kw)
    b = tts.generate("Sampling test sentence.", language="English", voice=voices["icl"], **kw)
    c = tts.generate("Sampling test sentence.", language="English", voice=voices["icl"], **dict(kw, seed=99))
    assert torch.equal(a.codes, b.codes)
    assert not torch.equal(a.codes, c.codes)
    # sampling with default settings follows generation_config.json (do_sample true)
    assert tts.settings().talker.do_sample and tts.settings().talker.top_k == 50


def test_voice_from_file(tts, voices):
    v = tts.create_voice_prompt(TINY / "reference.wav", ref_text=voices["icl"].ref_text)
    assert torch.equal(v.ref_codes, voices["icl"].ref_codes)
    assert max_abs(v.speaker_embedding, voices["icl"].speaker_embedding) < 1e-5


def test_primed_codec_state_is_kept_with_the_voice_and_exact(tts, voices, expected_info):
    """The codec state primed with an ICL voice's reference codes is computed when the voice is
    created (not on its first request), kept with it, shared read-only by its streams (each
    starts from a copy), and gives the same samples as priming a fresh decoder per request."""
    case = expected_info["generation"]["icl"]
    icl = voices["icl"]
    n0 = tts.codec_primings
    v = tts.create_voice_prompt(TINY / "reference.wav", ref_text=icl.ref_text)
    assert tts.codec_primings == n0 + 1  # at creation
    kept = v.primed_state(tts.speech_tokenizer)
    assert kept is not None and kept[1] == v.ref_codes.shape[0]
    before = {k: [t.clone() for t in ts] for k, ts in kept[0].items()}
    kw = dict(language=case["language"], **GREEDY)
    a = torch.cat([c.audio for c in tts.stream(case["text"], voice=v, **kw)])
    b = torch.cat([c.audio for c in tts.stream(case["text"], voice=v, **kw)])
    assert tts.codec_primings == n0 + 1  # no request primed again
    assert v.primed_state(tts.speech_tokenizer) is kept  # the same object, unchanged by the streams
    assert all(torch.equal(t, u) for k in before for t, u in zip(kept[0][k], before[k]))
    # without a precomputed state: a voice built by hand is primed on its first stream, once
    bare = VoicePrompt(icl.speaker_embedding, icl.ref_codes.clone(), icl.ref_text, "icl")
    assert bare.primed_state(tts.speech_tokenizer) is None
    c = torch.cat([ch.audio for ch in tts.stream(case["text"], voice=bare, **kw)])
    assert tts.codec_primings == n0 + 2
    # the old way: a fresh decoder fed the reference codes, then the generated frames
    codes = tts.generate(case["text"], voice=v, **kw).codes
    dec = tts.speech_tokenizer.streaming_decoder()
    dec.push(v.ref_codes)
    d = torch.cat([dec.push(codes[i:i + 1]) for i in range(codes.shape[0])])
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    # other codes (the same object edited) are not served the old state
    bare.ref_codes = bare.ref_codes[:-5].clone()
    assert bare.primed_state(tts.speech_tokenizer) is None


def test_warm_up_runs_a_short_synthesis_and_changes_nothing(tiny_tts):
    kw = dict(language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=6)
    before = tiny_tts.generate("Warm up check.", **kw)
    dt = tiny_tts.warm_up(frames=2)
    after = tiny_tts.generate("Warm up check.", **kw)
    assert dt > 0
    assert torch.equal(before.codes, after.codes) and torch.equal(before.audio, after.audio)


@pytest.mark.parametrize("quantize", [None, "w8a8", "w4a8"])
def test_talker_cache_grows_on_demand_with_the_same_codes(voices, quantize):
    """A session's talker cache starts small (`FrameGenerator.initial_cache`) and doubles when
    full: codes are those of a cache large enough from the start (float32 torch layers; w8a8 /
    w4a8 through the native decode steps, whose cache pointers move with the cache)."""
    model = Qwen3TTS.from_pretrained(TINY_MODEL, quantize=quantize)
    kw = dict(language="English", voice=voices["icl"], **dict(GREEDY, max_new_tokens=40))
    text = "Hello there, this is a longer sentence to make a few frames."
    model.generator.initial_cache = 1024
    big = model.generate(text, **kw).codes
    model.generator.initial_cache = 3
    grown = model.generate(text, **kw).codes
    assert big.shape[0] > 8 and torch.equal(big, grown)
