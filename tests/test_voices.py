"""Voices store: validation, atomic writes, prompt caching (memory + disk, rebuilt on change),
broken voices isolated, default voice handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY, TINY_MODEL
from qwen3tts.voices import VoiceError, VoiceStore, wav_bytes

REF_TEXT = "Okay, this is the reference recording used for voice cloning."


@pytest.fixture(scope="module")
def tts():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


def clip(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * 24000)) * 0.1).astype(np.float32)


def test_add_get_list_remove(tmp_path):
    s = VoiceStore(tmp_path, default_id="main")
    info = s.add(TINY / "reference.wav", transcript=REF_TEXT, name="Main Voice", voice_id="main", language="English")
    assert info.id == "main" and info.mode == "icl" and info.isDefault and abs(info.durationSec - 3.0) < 1e-3
    xv = s.add(wav_bytes(clip(4)), name="Other One")  # bytes upload, id from the name, no transcript -> x-vector
    assert xv.id == "other-one" and xv.mode == "xvector"
    voices, broken = s.list()
    assert [v.id for v in voices] == ["main", "other-one"] and not broken
    assert json.loads((tmp_path / "main" / "manifest.json").read_text())["transcript"] == REF_TEXT
    assert set(info.public()) == {"id", "name", "language", "description", "mode", "durationSec", "isDefault"}
    with pytest.raises(VoiceError) as e:
        s.remove("main")
    assert e.value.code == "IS_DEFAULT" and e.value.status == 409
    s.remove("other-one")
    assert not (tmp_path / "other-one").exists() and [v.id for v in s.list()[0]] == ["main"]
    with pytest.raises(VoiceError) as e:
        s.remove("other-one")
    assert e.value.status == 404


@pytest.mark.parametrize("kwargs,code", [
    (dict(audio=clip(2.5)), "BAD_DURATION"),
    (dict(audio=clip(31)), "BAD_DURATION"),
    (dict(audio=b"definitely not audio"), "BAD_AUDIO"),
    (dict(audio=clip(4), voice_id="../escape"), "BAD_ID"),
    (dict(audio=clip(4), voice_id="Upper"), "BAD_ID"),
    (dict(audio=clip(4), mode="icl"), "NO_TRANSCRIPT"),
    (dict(audio=clip(4), mode="weird"), "BAD_MODE"),
])
def test_add_refuses(tmp_path, kwargs, code):
    s = VoiceStore(tmp_path)
    a = kwargs.pop("audio")
    if isinstance(a, np.ndarray):
        a = (a, 24000)
    with pytest.raises(VoiceError) as e:
        s.add(a, **kwargs)
    assert e.value.code == code and e.value.status == 400
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written


def test_duplicate_and_path_escape(tmp_path):
    s = VoiceStore(tmp_path)
    s.add((clip(4), 24000), voice_id="a")
    with pytest.raises(VoiceError) as e:
        s.add((clip(4), 24000), voice_id="a")
    assert e.value.status == 409
    for bad in ("..", "a/../../x", "/etc", ""):
        with pytest.raises(VoiceError):
            s.get(bad)


def test_prompt_cache_memory_disk_and_rebuild(tmp_path, tts):
    s = VoiceStore(tmp_path, model_tag="tiny")
    s.add(TINY / "reference.wav", transcript=REF_TEXT, voice_id="v")
    p1 = s.prompt("v", tts)
    assert s.prompt_computations == 1 and p1.icl and p1.ref_codes.shape == (38, 16)
    assert s.prompt("v", tts) is p1 and s.prompt_computations == 1  # memory hit
    s2 = VoiceStore(tmp_path, model_tag="tiny")  # a restart: disk hit
    p2 = s2.prompt("v", tts)
    assert s2.prompt_computations == 0 and torch.equal(p2.ref_codes, p1.ref_codes)
    # the transcript changes -> rebuilt
    m = json.loads((tmp_path / "v" / "manifest.json").read_text())
    m["transcript"] = "Something else entirely."
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(m))
    p3 = s2.prompt("v", tts)
    assert s2.prompt_computations == 1 and p3.ref_text == "Something else entirely."
    # the clip changes -> rebuilt
    import soundfile as sf

    sf.write(str(tmp_path / "v" / "reference.wav"), clip(3.5, seed=3), 24000, subtype="PCM_16")
    p4 = s2.prompt("v", tts)
    assert s2.prompt_computations == 2 and p4.ref_codes.shape[0] == 44
    # another model -> rebuilt
    assert VoiceStore(tmp_path, model_tag="other").prompt("v", tts) is not None
    # a corrupt cache file is rebuilt, not fatal
    (tmp_path / "v" / "prompt.safetensors").write_bytes(b"garbage")
    s3 = VoiceStore(tmp_path, model_tag="tiny")
    assert s3.prompt("v", tts).icl and s3.prompt_computations == 1


def test_lru_and_ttl(tmp_path, tts):
    s = VoiceStore(tmp_path, cache_size=1, ttl=3600)
    s.add((clip(3.2, 1), 24000), voice_id="a")
    s.add((clip(3.2, 2), 24000), voice_id="b")
    pa = s.prompt("a", tts)
    s.prompt("b", tts)  # evicts a from memory (size 1); disk still has it
    assert s.prompt("a", tts) is not pa and s.prompt_computations == 2
    s.ttl = 0.0  # everything expired: served from disk again, never recomputed
    s.prompt("a", tts)
    assert s.prompt_computations == 2


def test_broken_voices_are_isolated(tmp_path, tts):
    s = VoiceStore(tmp_path, default_id="gone")
    s.add((clip(3.2), 24000), voice_id="good")
    s.add((clip(3.2), 24000), voice_id="noclip")
    (tmp_path / "noclip" / "reference.wav").unlink()
    s.add((clip(3.2), 24000), voice_id="badjson")
    (tmp_path / "badjson" / "manifest.json").write_text("[1, 2")
    (tmp_path / ".tmp-leftover").mkdir()  # a crashed write leaves only a hidden temp dir
    voices, broken = s.list()
    assert [v.id for v in voices] == ["good"]
    assert "missing" in broken["noclip"] and "unreadable manifest.json" in broken["badjson"]
    with pytest.raises(VoiceError) as e:
        s.prompt("noclip", tts)
    assert e.value.code == "BROKEN"
    prompt, warning = s.default_prompt(tts)
    assert prompt is None and "speaking without a reference" in warning
    s.default_id = "good"
    prompt, warning = s.default_prompt(tts)
    assert prompt is not None and warning is None and prompt.mode == "xvector"


def test_loaded_voice_comes_primed(tmp_path, tts):
    """A voice read from the disk cache gets its codec state when it is loaded, once: its first
    stream does not prime it."""
    s = VoiceStore(tmp_path, model_tag="tiny")
    s.add(TINY / "reference.wav", transcript=REF_TEXT, voice_id="v")
    s.prompt("v", tts)  # computed (and primed) and saved
    s2 = VoiceStore(tmp_path, model_tag="tiny")  # a restart: loaded from disk
    n = tts.codec_primings
    p = s2.prompt("v", tts)
    assert s2.prompt_computations == 0 and tts.codec_primings == n + 1
    kept = p.primed_state(tts.speech_tokenizer)
    assert kept is not None
    assert s2.prompt("v", tts) is p and tts.codec_primings == n + 1  # memory hit: nothing again
    chunks = list(tts.stream("Hi.", language="English", voice=p, do_sample=False, subtalker_dosample=False, max_new_tokens=3))
    assert chunks and tts.codec_primings == n + 1 and p.primed_state(tts.speech_tokenizer) is kept
