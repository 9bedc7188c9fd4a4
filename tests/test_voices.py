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
    assert [p.name for p in tmp_path.iterdir() if p.name != ".lock"] == []  # nothing half-written (.lock: the store lock file)


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


def _race_add(root, seed, results):
    try:
        VoiceStore(root).add((clip(3.2, seed), 24000), voice_id="same")
        results.put("ok")
    except VoiceError as e:
        results.put(e.code)


def test_same_id_from_several_processes(tmp_path):
    """The store lock is across processes: of 4 processes adding one id, one wins, the rest get EXISTS."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_race_add, args=(tmp_path, i, results)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(results.get(timeout=5) for _ in procs) == ["EXISTS", "EXISTS", "EXISTS", "ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "same"]


def test_writes_fsync_before_rename_and_replace(tmp_path, monkeypatch):
    import os

    synced, real_fsync, real_rename = [], os.fsync, os.rename

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def rename(a, b):
        synced.append(("rename", str(a), str(b)))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    s = VoiceStore(tmp_path)
    s.add((clip(3.2, 1), 24000), voice_id="v", language="english")
    ren = next(i for i, x in enumerate(synced) if isinstance(x, tuple))
    tmp = synced[ren][1]
    assert {tmp + "/reference.wav", tmp + "/manifest.json", tmp} <= set(synced[:ren])  # files and folder before the rename
    assert synced[ren + 1] == str(tmp_path)  # then the store folder
    old = s.get("v")
    info = s.add((clip(3.5, 2), 24000), voice_id="v", replace=True)
    assert info.replaced and info.durationSec != old.durationSec and old.language == "english"  # no language list known: kept as given
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "v"]  # the old one is not left in a trash folder
    with pytest.raises(VoiceError) as e:
        s.add((clip(3.2), 24000), voice_id="v")
    assert e.value.code == "EXISTS"


def test_leftovers_cleaned_and_languages_checked(tmp_path):
    (tmp_path / ".tmp-abc").mkdir()
    (tmp_path / ".tmp-abc" / "reference.wav").write_bytes(b"half")
    (tmp_path / ".trash-def").mkdir()
    (tmp_path / ".tmp-x.safetensors").write_bytes(b"")
    s = VoiceStore(tmp_path, languages=["auto", "English", "German"])
    assert s.cleaned == 3 and sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    with pytest.raises(VoiceError) as e:
        s.add((clip(3.2), 24000), voice_id="x", language="Klingon")
    assert e.value.code == "BAD_LANGUAGE" and e.value.status == 400 and "English, German" in e.value.message
    assert s.add((clip(3.2), 24000), voice_id="x", language="GERMAN").language == "German"
    assert s.add((clip(3.2), 24000), voice_id="y", language="").language == "auto"


def test_config_languages_match_the_model(tts):
    from qwen3tts.voices import config_languages

    assert config_languages(TINY_MODEL) == tts.languages
    assert config_languages("Qwen/not-a-local-folder") is None


def test_replace_never_hides_the_voice(tmp_path):
    """Readers during replaces always find the voice (an atomic swap where the file system has one)."""
    import threading

    s = VoiceStore(tmp_path)
    s.add((clip(3.2, 0), 24000), voice_id="v")
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                seen.append(s.get("v").durationSec)
            except VoiceError as e:
                seen.append(e.code)

    t = threading.Thread(target=read)
    t.start()
    for i in range(20):
        assert VoiceStore(tmp_path).add((clip(3.2 + 0.1 * (i % 2), i), 24000), voice_id="v", replace=True).replaced
    stop.set()
    t.join()
    assert seen and not [x for x in seen if isinstance(x, str)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "v"]


def test_exchange_swaps_folders(tmp_path):
    from qwen3tts.voices import _exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("b")
    assert _exchange(tmp_path / "a", tmp_path / "b")  # Linux local file systems have RENAME_EXCHANGE
    assert (tmp_path / "a" / "x").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"
    assert not _exchange(tmp_path / "a", tmp_path / "missing")


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
