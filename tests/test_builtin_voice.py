"""The built-in default voice (CMU ARCTIC slt, `qwen3tts/presets/voices/arctic_slt`): shipped with
its licence notice, listed by a fresh server as built in, spoken by default (not the
no-reference audio), not deletable, replaced by --default-voice; `voice="default"` in the
library (voice=None keeps meaning no reference)."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY, TINY_MODEL
from qwen3tts import builtin_voice
from qwen3tts.server.app import ServerConfig
from server_util import ServerThread, connect

MAX_NEW = 6
TEXT = "Hello with the built-in voice."
KW = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def lib():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


def pcm16(x) -> bytes:
    return (np.clip(x.numpy(), -1, 1) * 32767.0).round().astype("<i2").tobytes()


def test_shipped_files():
    d = builtin_voice.DIR
    info = sf.info(str(d / "arctic_a0009.wav"))
    assert (info.samplerate, info.channels, round(info.duration, 2)) == (16000, 1, 3.1)
    notice = (d / "COPYING").read_text()
    assert "Carnegie Mellon University" in notice and "Copyright (c) 2003" in notice
    m = builtin_voice.manifest()
    assert m["id"] == "arctic-slt" and m["mode"] == "xvector" and m["transcript"] == "He turned sharply and faced Gregson across the table."


def test_library_default_voice(lib):
    p1 = builtin_voice.prompt(lib)
    assert p1 is builtin_voice.prompt(lib) and not p1.icl  # made once per model, x-vector mode
    a = lib.generate(TEXT, voice="default", **KW).audio
    b = lib.generate(TEXT, voice=p1, **KW).audio
    c = lib.generate(TEXT, voice=None, **KW).audio
    assert torch.equal(a, b) and not torch.equal(a, c)
    s = torch.cat([ch.audio for ch in lib.stream(TEXT, voice="default", **KW)])
    assert (s - a).abs().max() < 1e-3
    with pytest.raises(ValueError, match="unknown voice 'bob'"):
        lib.generate(TEXT, voice="bob", **KW)


async def speak(http, url, start=None):
    c = await connect(http, url)
    assert (await c.ready())["type"] == "ready"
    if start:
        await c.send(start)
        assert (await c.type("started"))["type"] == "started"
    await c.send({"type": "speak", "text": TEXT, "id": "r"})
    done = await c.type("complete")
    assert done["type"] == "complete", done
    await c.ws.close()
    return bytes(c.audio)


def test_fresh_server_lists_and_speaks_builtin(tmp_path, lib):
    s = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(tmp_path / "v"), greedy=True, max_new_tokens=MAX_NEW))
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                async with http.get(s.url + "/api/v1/voices") as r:
                    listing = await r.json()
                default_audio = await speak(http, s.ws_url)
                named_audio = await speak(http, s.ws_url, {"type": "start", "voice": "arctic-slt"})
                async with http.delete(s.url + "/api/v1/voices/arctic-slt") as r:
                    deleted = r.status, await r.json()
                async with http.get(s.url + "/api/v1/voices") as r:
                    after = await r.json()
                return listing, default_audio, named_audio, deleted, after

        listing, default_audio, named_audio, deleted, after = asyncio.run(go())
    finally:
        s.stop()
    (v,) = listing["voices"]
    assert v == {"id": "arctic-slt", "name": "SLT (CMU ARCTIC, built-in)", "language": "English", "description": v["description"],
                 "mode": "xvector", "durationSec": 3.095, "isDefault": True, "builtIn": True}
    want = torch.cat([ch.audio for ch in lib.stream(TEXT, voice="default", **KW)])
    bare = torch.cat([ch.audio for ch in lib.stream(TEXT, voice=None, **KW)])
    assert default_audio == pcm16(want) == named_audio and default_audio != pcm16(bare)
    assert deleted[0] == 409 and deleted[1]["error"]["code"] == "BUILT_IN"
    assert after["voices"] == listing["voices"]


@pytest.mark.parametrize("override", ["mine", "none"])
def test_default_voice_flag_overrides(tmp_path, lib, override):
    from qwen3tts.voices import VoiceStore

    vd = tmp_path / "v"
    VoiceStore(vd).add(TINY / "reference.wav", voice_id="mine")
    s = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(vd), default_voice=override, greedy=True, max_new_tokens=MAX_NEW))
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                async with http.get(s.url + "/api/v1/voices") as r:
                    listing = await r.json()
                return listing, await speak(http, s.ws_url)

        listing, audio = asyncio.run(go())
    finally:
        s.stop()
    flags = {v["id"]: (v["isDefault"], v.get("builtIn", False)) for v in listing["voices"]}
    assert flags == {"arctic-slt": (False, True), "mine": (override == "mine", False)}
    voice = lib.create_voice_prompt(TINY / "reference.wav", x_vector_only=True) if override == "mine" else None
    want = torch.cat([ch.audio for ch in lib.stream(TEXT, voice=voice, **KW)])
    assert audio == pcm16(want)



@pytest.mark.slow
def test_checkpoint_without_speaker_encoder(tmp_path):
    """A CustomVoice checkpoint has its own speakers: the server's default (the built-in voice)
    gives it no prompt (and no warning) instead of failing the load; asked for by name in the
    library it is a clear error."""
    from qwen3tts.dev.random_model import random_tts, write_random_model

    tts = random_tts(write_random_model(tmp_path / "cv", preset="0.6b-customvoice", weights=False), seed=1, dtype=torch.bfloat16)
    store = builtin_voice.VoiceStoreWithBuiltin(tmp_path / "v")
    assert store.default_prompt(tts) == (None, None)
    with pytest.raises(ValueError, match="needs a Base checkpoint"):
        tts.generate("Hello.", voice="default", speaker="Ryan", **KW)
