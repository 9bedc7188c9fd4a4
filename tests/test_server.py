"""Speak protocol with a real WebSocket client against a server on loopback (tiny model):
happy path byte-checked against the library, every error code, cancel, disconnect, two sessions,
auth, transports/encodings/rates, voices API, health, metrics, OpenAI route."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
import wave

import aiohttp
import numpy as np
import pytest
import torch

from conftest import TINY, TINY_MODEL
from server_util import ServerThread, connect
from qwen3tts.server.app import ServerConfig
from qwen3tts.server.engine import Engine
from qwen3tts.voices import VoiceStore

REF_TEXT = "Okay, this is the reference recording used for voice cloning."
TEXT = "Hello there, how are you today?"
MAX_NEW = 16  # server token budget per piece in these tests (15 frames)


def arun(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    voices = VoiceStore(tmp_path_factory.mktemp("voices"))
    eng = Engine(str(TINY_MODEL), voices=voices, greedy=True, max_new_tokens=MAX_NEW)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def srv(engine):
    s = ServerThread(ServerConfig(max_sessions=6, max_queue=3), engine)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def lib():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


def pcm16(x):
    return (np.clip(np.asarray(x), -1, 1) * 32767.0).round().astype("<i2")


async def upload(http, url, voice_id="tiny", transcript=REF_TEXT, path=TINY / "reference.wav", **extra):
    form = aiohttp.FormData()
    form.add_field("audio", path.read_bytes() if hasattr(path, "read_bytes") else path, filename="clip.wav", content_type="audio/wav")
    for k, v in dict(transcript=transcript, name="Tiny voice", id=voice_id, **extra).items():
        if v is not None:
            form.add_field(k, v)
    async with http.post(url + "/api/v1/voices", data=form) as r:
        return r.status, await r.json()


# ---------------------------------------------------------------------------- happy path


def test_happy_path_matches_library(srv, lib):
    async def go():
        async with aiohttp.ClientSession() as http:
            status, body = await upload(http, srv.url)
            assert status == 201 and body["voice"]["id"] == "tiny" and body["voice"]["mode"] == "icl"
            c = await connect(http, srv.ws_url)
            ready = await c.ready()
            assert ready["type"] == "ready" and ready["capabilities"]["streaming"] is True
            assert "English" in ready["capabilities"]["languages"] and ready["capabilities"]["maxChars"] == 5000
            await c.send({"type": "start", "voice": "tiny", "language": "english", "contractId": "c-7"})
            st = await c.type("started")
            assert st == {"type": "started", "sampleRate": 24000, "encoding": "pcm16", "voice": "tiny", "language": "English", "contractId": "c-7"}
            await c.send({"type": "speak", "text": TEXT, "id": "req-1"})
            assert (await c.type("speaking")) == {"type": "speaking", "id": "req-1"}
            done = await c.type("complete")
            await c.ws.close()
            return c, done
    c, done = arun(go())
    assert done["id"] == "req-1" and done["contractId"] == "c-7" and done["charactersProcessed"] == len(TEXT)
    voice = lib.create_voice_prompt(TINY / "reference.wav", ref_text=REF_TEXT)
    kw = dict(language="English", voice=voice, do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)
    streamed = torch.cat([ch.audio for ch in lib.stream(TEXT, **kw)])
    got = np.frombuffer(bytes(c.audio), dtype="<i2")
    assert got.tobytes() == pcm16(streamed).tobytes()  # byte-identical to the library's stream
    offline = lib.generate(TEXT, **kw).audio
    assert np.abs(got.astype(int) - pcm16(offline[offline.shape[0] - got.shape[0]:]).astype(int)).max() <= 1
    assert done["audioLengthMs"] == round(len(got) / 24)
    assert done["firstAudioMs"] is not None and 0 <= done["firstAudioMs"] <= done["durationMs"]
    # audio came in 80 ms frames between speaking and complete
    kinds = [e[0] for e in c.events]
    i0 = next(i for i, e in enumerate(c.events) if e[0] == "json" and e[1]["type"] == "speaking")
    i1 = next(i for i, e in enumerate(c.events) if e[0] == "json" and e[1]["type"] == "complete")
    assert set(kinds[i0 + 1 : i1]) == {"bin"} and all(n == 3840 for k, n in c.events[i0 + 1 : i1])


def test_speak_before_start_uses_defaults_and_json_transport(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": "Short one."})
            st = await c.type("started")
            assert st["voice"] == "default" and st["sampleRate"] == 24000
            sp = await c.type("speaking")
            assert sp["id"] == "r1"
            await c.type("complete")
            # JSON transport, float32, 16 kHz
            await c.send({"type": "start", "transport": "json", "encoding": "pcm32f", "sampleRate": 16000})
            await c.type("started")
            await c.send({"type": "speak", "text": "Short one.", "id": "j"})
            chunks = []
            while True:
                m = await c.next()
                if m["type"] == "audioChunk":
                    chunks.append(m)
                elif m["type"] in ("complete", "error"):
                    break
            return c, chunks, m
    c, chunks, done = arun(go())
    assert done["type"] == "complete"
    import base64

    assert [ch["sequenceNumber"] for ch in chunks] == list(range(len(chunks)))
    assert chunks[-1]["isFinal"] and not any(ch["isFinal"] for ch in chunks[:-1])
    pcm = np.concatenate([np.frombuffer(base64.b64decode(ch["data"]), dtype="<f4") for ch in chunks])
    first = np.frombuffer(bytes(c.audio), dtype="<i2")  # the first request's 24 kHz PCM16
    assert abs(len(pcm) - len(first) * 2 / 3) <= 2  # resampled to 16 kHz
    ts = [ch["timestampMs"] for ch in chunks]
    assert ts[0] == 0 and ts == sorted(ts)
    assert abs(done["audioLengthMs"] - len(pcm) / 16) <= 1


# ---------------------------------------------------------------------------- error codes


@pytest.mark.parametrize("raw,code", [
    ("not json", "INVALID_MESSAGE"),
    ("[1, 2]", "INVALID_MESSAGE"),
    ('{"type": "dance"}', "INVALID_MESSAGE"),
    ('{"no_type": 1}', "INVALID_MESSAGE"),
    ('{"type": "speak", "text": 5}', "INVALID_MESSAGE"),
    ('{"type": "speak", "text": "hi", "priority": "urgent"}', "INVALID_MESSAGE"),
    ('{"type": "start", "sampleRate": "24000"}', "INVALID_MESSAGE"),
    ('{"type": "start", "transport": "carrier-pigeon"}', "INVALID_MESSAGE"),
    ('{"type": "speak", "text": "   "}', "INVALID_TEXT"),
    ('{"type": "speak", "text": "' + "a" * 5001 + '"}', "INVALID_TEXT"),
    ('{"type": "start", "sampleRate": 12345}', "UNSUPPORTED_FORMAT"),
    ('{"type": "start", "encoding": "mp3"}', "UNSUPPORTED_FORMAT"),
    ('{"type": "start", "language": "Klingon"}', "UNSUPPORTED_FORMAT"),
    ('{"type": "start", "voice": "nobody"}', "VOICE_NOT_FOUND"),
    ('{"type": "start", "voice": "../../etc"}', "VOICE_NOT_FOUND"),
    (b"\x00\x01binary", "INVALID_MESSAGE"),
])
def test_bad_messages_get_codes_and_session_goes_on(srv, raw, code):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            if isinstance(raw, bytes):
                await c.ws.send_bytes(raw)
            else:
                await c.send(raw)
            err = await c.type("error")
            await c.send({"type": "start"})  # the session is still usable
            ok = await c.type("started")
            await c.ws.close()
            return err, ok
    err, ok = arun(go())
    assert err["type"] == "error" and err["code"] == code and isinstance(err["message"], str) and err["message"]
    assert err["recoverable"] == (code == "INVALID_MESSAGE")
    assert ok["type"] == "started"


def test_model_loading_failure(tmp_path):
    eng = Engine(str(tmp_path / "no-model"), voices=VoiceStore(tmp_path / "v"))
    s = ServerThread(ServerConfig(), eng)
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                c = await connect(http, s.ws_url)
                err = await c.ready()
                close = await c.next()
                async with http.get(s.url + "/healthz") as r:
                    health = await r.json()
                return err, close, c.ws.close_code, health
        err, close, code, health = arun(go())
        assert err["code"] == "MODEL_LOADING" and err["recoverable"] is True and "could not be loaded" in err["message"]
        assert code == 1011 and health["model"] == "not_loaded" and "error" in health
    finally:
        s.stop()
        eng.shutdown()


@pytest.mark.parametrize("dtype, mode, cls", [("bfloat16", "int8", "Int8Linear"), ("float32", "w8a8", "NativeW8A8Linear")])
def test_quantized_engine_serves_and_flags_parse(tmp_path, dtype, mode, cls):
    """`--dtype bfloat16 --quantize int8` and `--quantize w8a8` (the fast CPU modes) reach the engine's model."""
    from qwen3tts.serve import main, parse_args

    a = parse_args(["--dtype", dtype, "--quantize", mode])
    assert (a.dtype, a.quantize) == (dtype, mode) and parse_args([]).quantize == "none"
    assert main(["--quantize", "int4"]) == 2
    eng = Engine(str(TINY_MODEL), dtype=dtype, quantize=mode, voices=VoiceStore(tmp_path / "v"), greedy=True, max_new_tokens=6)
    s = ServerThread(ServerConfig(), eng)
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                c = await connect(http, s.ws_url)
                await c.ready()
                await c.send({"type": "speak", "text": "Quantized.", "id": "q"})
                done = await c.type("complete")
                return done, bytes(c.audio)
        done, audio = arun(go())
        assert type(eng.tts.talker.model.layers[0].self_attn.o_proj).__name__ == cls
        assert done["id"] == "q" and len(audio) == 5 * 3840  # 5 frames of PCM16
    finally:
        s.stop()
        eng.shutdown()


def test_unauthorized_and_auth(engine):
    s = ServerThread(ServerConfig(auth_token="sesame"), engine)
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                out = {}
                c = await connect(http, s.ws_url)
                await c.ready()
                await c.send({"type": "start", "authToken": "wrong"})
                out["bad"] = await c.type("error")
                await c.next()
                out["bad_close"] = c.ws.close_code
                c = await connect(http, s.ws_url)
                await c.ready()
                await c.send({"type": "speak", "text": "no start, no token"})
                out["speak_first"] = await c.type("error")
                c = await connect(http, s.ws_url)
                await c.ready()
                await c.send({"type": "start", "authToken": "sesame"})
                out["good"] = await c.type("started")
                await c.ws.close()
                c = await connect(http, s.ws_url, headers={"Authorization": "Bearer sesame"})
                await c.ready()
                await c.send({"type": "start"})
                out["header"] = await c.type("started")
                await c.ws.close()
                async with http.post(s.url + "/v1/audio/speech", json={"input": "hi"}) as r:
                    out["http"] = r.status
                return out
        out = arun(go())
        assert out["bad"]["code"] == "UNAUTHORIZED" and out["bad_close"] == 1008
        assert out["speak_first"]["code"] == "UNAUTHORIZED"
        assert out["good"]["type"] == "started" and out["header"]["type"] == "started"
        assert out["http"] == 401
    finally:
        s.stop()


def test_rate_limited_sessions_and_queue(engine):
    s = ServerThread(ServerConfig(max_sessions=1, max_queue=2), engine)
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                a = await connect(http, s.ws_url)
                await a.ready()
                b = await connect(http, s.ws_url)
                err = await b.next()
                await b.next()
                b_code = b.ws.close_code
                await a.send({"type": "start"})
                await a.type("started")
                for i in range(3):
                    await a.send({"type": "speak", "text": f"Number {i}.", "id": f"q{i}"})
                q_err = await a.type("error")
                await a.send({"type": "cancel"})
                await a.ws.close()
                return err, b_code, q_err
        err, b_code, q_err = arun(go())
        assert err["code"] == "RATE_LIMITED" and b_code == 1013
        assert q_err["code"] == "RATE_LIMITED" and q_err["id"] == "q2" and q_err["recoverable"] is True
    finally:
        s.stop()


def test_idle_timeout(engine):
    s = ServerThread(ServerConfig(idle_timeout=1.0), engine)
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                c = await connect(http, s.ws_url)
                await c.ready()
                err = await c.type("error", timeout=10)
                await c.next()
                return err, c.ws.close_code
        err, code = arun(go())
        assert err["code"] == "TIMEOUT" and code == 1001
    finally:
        s.stop()


class _Slow:
    """Wraps the engine model's batched frame step so each step takes `delay` seconds; can fail
    on demand (on the third step)."""

    def __init__(self, engine, delay=0.0, fail=None):
        self.engine, self.delay, self.fail = engine, delay, fail

    def __enter__(self):
        gen = self.engine.tts.generator
        self.orig = gen.next_frames
        calls = [0]

        def next_frames(states):
            calls[0] += 1
            if self.fail is not None and calls[0] == 3:
                raise self.fail
            time.sleep(self.delay)
            return self.orig(states)

        gen.next_frames = next_frames
        return self

    def __exit__(self, *exc):
        del self.engine.tts.generator.next_frames  # back to the class method


def test_request_timeout_synthesis_error_and_oom(engine, srv):
    class OutOfMemoryError(RuntimeError):
        pass

    async def one(text):
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": text, "id": "x"})
            err = await c.type("error")
            await c.send({"type": "speak", "text": "Still alive?", "id": "y"})
            return err, c

    with _Slow(engine, fail=RuntimeError("boom")):
        err, _ = arun(one("fail please"))
    assert err["code"] == "SYNTHESIS_ERROR" and err["id"] == "x" and "boom" in err["message"] and err["recoverable"]
    with _Slow(engine, fail=OutOfMemoryError("CUDA out of memory")):
        err, _ = arun(one("oom please"))
    assert err["code"] == "GPU_OUT_OF_MEMORY" and err["recoverable"]
    old = engine.request_timeout
    engine.request_timeout = 0.2
    try:
        with _Slow(engine, delay=0.1):
            err, _ = arun(one("slow please"))
    finally:
        engine.request_timeout = old
    assert err["code"] == "TIMEOUT" and err["id"] == "x"


def test_cancel_mid_stream_within_one_frame(engine, srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "start"})
            await c.type("started")
            await c.send({"type": "speak", "text": "A long sentence that keeps going and going.", "id": "long"})
            await c.send({"type": "speak", "text": "Queued behind.", "id": "queued"})
            await c.type("speaking")
            while not isinstance(await c.next(), bytes):
                pass
            await c.next()  # a second frame
            n_before = len(c.audio)
            await c.send({"type": "cancel"})
            errs = []
            while len(errs) < 2:
                m = await c.next()
                if isinstance(m, dict) and m["type"] == "error":
                    errs.append(m)
            after = len(c.audio) - n_before
            # the session is usable after a cancel
            await c.send({"type": "speak", "text": "After cancel.", "id": "after"})
            done = await c.type("complete")
            return errs, after, done
    with _Slow(engine, delay=0.06):
        errs, after, done = arun(go())
    assert sorted(e["id"] for e in errs) == ["long", "queued"]
    assert all(e["code"] == "CANCELLED" and e["recoverable"] for e in errs)
    assert after <= 3840  # at most the one frame already on its way
    assert done["id"] == "after"


def test_stop_closes_with_1000(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": "Something to stop.", "id": "s"})
            await c.type("speaking")
            await c.send({"type": "stop", "reason": "bye"})
            msgs = []
            while True:
                m = await c.next()
                if isinstance(m, dict):
                    msgs.append(m)
                elif not isinstance(m, bytes):
                    break
            return msgs, c.ws.close_code
    msgs, code = arun(go())
    assert msgs[-1] == {"type": "stopped", "reason": "bye"} and code == 1000
    assert not any(m["type"] == "complete" for m in msgs)  # the request in progress was cut


def test_disconnect_frees_session_and_server_keeps_serving(engine, srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": "Going away mid stream now.", "id": "gone"})
            await c.type("speaking")
            while not isinstance(await c.next(), bytes):
                pass
            await c.ws.close()
        for _ in range(100):
            if not srv.server.sessions and not engine._active:
                break
            await asyncio.sleep(0.05)
        freed = not srv.server.sessions and not engine._active
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": "Next client."})
            done = await c.type("complete")
        return freed, done
    with _Slow(engine, delay=0.05):
        freed, done = arun(go())
    assert freed and done["type"] == "complete"


def test_sessions_are_batched_and_each_equals_its_library_stream(engine, srv, lib):
    texts = {"a": "Session a is talking now.", "b": "And session b says something else.", "c": "Third!"}

    async def one(http, name, log, audio):
        c = await connect(http, srv.ws_url)
        await c.ready()
        await c.send({"type": "speak", "text": texts[name], "id": name})
        while True:
            m = await c.next()
            if isinstance(m, bytes):
                log.append(name)
                audio[name] += m
            elif m["type"] in ("complete", "error"):
                return m

    sizes = []
    gen = engine.tts.generator

    async def go():
        log, audio = [], {k: bytearray() for k in texts}
        async with aiohttp.ClientSession() as http:
            res = await asyncio.gather(*(one(http, k, log, audio) for k in texts))
        return res, log, audio
    with _Slow(engine, delay=0.02):
        inner = gen.next_frames
        gen.next_frames = lambda states: (sizes.append(len(states)), inner(states))[1]
        res, log, audio = arun(go())
    assert [r["type"] for r in res] == ["complete"] * 3
    assert max(sizes) == 3  # one step advanced all three sessions together
    # interleaved frame by frame: b's audio starts before a's ends
    assert log.index("b") < len(log) - 1 - log[::-1].index("a")
    kw = dict(language="auto", do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)
    for name, text in texts.items():
        alone = pcm16(torch.cat([ch.audio for ch in lib.stream(text, **kw)])).astype(int)
        got = np.frombuffer(bytes(audio[name]), dtype="<i2").astype(int)
        assert got.shape == alone.shape and np.abs(got - alone).max() <= 1  # batched codec: fp32 rounding only


def test_high_priority_goes_first(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)
            await c.ready()
            await c.send({"type": "speak", "text": "First.", "id": "n1"})
            await c.type("speaking")  # n1 is in progress; n2 and h queue behind it
            await c.send({"type": "speak", "text": "Second.", "id": "n2"})
            await c.send({"type": "speak", "text": "Urgent.", "id": "h", "priority": "high"})
            order = []
            while len(order) < 3:
                m = await c.type("complete")
                order.append(m["id"])
            return order
    with _Slow(srv.server.engine, delay=0.02):
        order = arun(go())
    assert order == ["n1", "h", "n2"]  # high goes to the front of the queue, it does not interrupt


# ---------------------------------------------------------------------------- HTTP


def test_voices_api(srv):
    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            c = await connect(http, srv.ws_url)  # makes sure the model is loaded
            await c.ready()
            await c.ws.close()
            out["add"] = await upload(http, srv.url, voice_id="second", transcript="")
            out["dup"] = await upload(http, srv.url, voice_id="second", transcript="")
            out["short"] = await upload(http, srv.url, voice_id="short", path=(TINY / "reference.wav").read_bytes()[:44 + 48000 * 2])
            out["junk"] = await upload(http, srv.url, voice_id="junk", path=b"nonsense bytes")
            out["badid"] = await upload(http, srv.url, voice_id="Bad Id")
            big = aiohttp.FormData()
            big.add_field("audio", b"\0" * (11 * 2**20), filename="big.wav")
            async with http.post(srv.url + "/api/v1/voices", data=big) as r:
                out["big"] = r.status, await r.json()
            async with http.get(srv.url + "/api/v1/voices") as r:
                out["list"] = await r.json()
            async with http.get(srv.url + "/v1/audio/voices") as r:
                out["oa_voices"] = await r.json()
            async with http.delete(srv.url + "/api/v1/voices/second") as r:
                out["del"] = r.status
            async with http.delete(srv.url + "/api/v1/voices/second") as r:
                out["del404"] = r.status
            async with http.get(srv.url + "/healthz") as r:
                out["health"] = await r.json()
            async with http.get(srv.url + "/metrics") as r:
                out["metrics"] = await r.text()
        return out
    out = arun(go())
    assert out["add"][0] == 201 and out["add"][1]["voice"]["mode"] == "xvector"
    assert out["dup"][0] == 409 and out["dup"][1]["error"]["code"] == "EXISTS"
    assert out["short"][0] == 400 and "3 to 30 s" in out["short"][1]["error"]["message"]
    assert out["junk"][0] == 400 and out["junk"][1]["error"]["code"] == "BAD_AUDIO"
    assert out["badid"][0] == 400 and out["badid"][1]["error"]["code"] == "BAD_ID"
    assert out["big"][0] == 413
    ids = [v["id"] for v in out["list"]["voices"]]
    assert "second" in ids and set(out["list"]["voices"][0]) == {"id", "name", "language", "description", "mode", "durationSec", "isDefault"}
    assert out["del"] == 204 and out["del404"] == 404
    assert out["health"] == {"status": "ok", "model": "loaded"}
    m = out["metrics"]
    for name in ("qwen3tts_requests_total", 'qwen3tts_errors_total{code="', "qwen3tts_first_audio_seconds_bucket", "qwen3tts_real_time_factor_count",
                 "qwen3tts_sessions", "qwen3tts_queue_depth"):
        assert name in m
    assert any(v["id"] == "second" for v in out["oa_voices"]["voices"])


def test_openai_speech(srv, lib):
    async def go():
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": "alloy", "speed": 1.5,
                                                                 "response_format": "wav"}) as r:
                wav_body, wav_headers, st = await r.read(), r.headers, r.status
            async with http.post(srv.url + "/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"}) as r:
                pcm_body = await r.read()
            errs = []
            for body in ({"input": ""}, {"input": "hi", "response_format": "aac"}, {"input": "hi", "voice": "nobody"}, [1]):
                async with http.post(srv.url + "/v1/audio/speech", json=body) as r:
                    errs.append((r.status, (await r.json())["error"]["code"]))
            return st, wav_body, wav_headers, pcm_body, errs
    st, wav_body, headers, pcm_body, errs = arun(go())
    assert st == 200 and headers["Content-Type"] == "audio/wav" and "X-Speed-Ignored" in headers
    assert wav_body[:4] == b"RIFF" and wav_body[8:16] == b"WAVEfmt " and wav_body[36:40] == b"data"
    assert wav_body[44:] == pcm_body
    kw = dict(language="auto", voice=None, do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)
    want = torch.cat([c.audio for c in lib.stream(TEXT, **kw)])
    assert pcm_body == pcm16(want).tobytes()
    assert errs == [(400, "INVALID_TEXT"), (400, "UNSUPPORTED_FORMAT"), (404, "VOICE_NOT_FOUND"), (400, "INVALID_MESSAGE")]


def test_server_does_not_import_torch():
    code = ("import sys, qwen3tts.serve, qwen3tts.server.app, qwen3tts.server.session, qwen3tts.server.engine; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == b"ok", r.stderr.decode()
