"""Server hardening, through a real server on loopback (tiny model): decode bombs refused from the
header (peak memory of a real server process measured), the Origin / Host policy on every route
and the WebSocket upgrade, one client's bad input or failing row never failing another's request,
admission shared by the WebSocket and the OpenAI route, unauthenticated sockets, and inputs that
used to end in a traceback. No test here leaves a traceback in the server's log."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY, TINY_MODEL
from server_util import ServerThread, connect, free_port
from qwen3tts.server.app import ServerConfig
from qwen3tts.server.engine import Engine, Request
from qwen3tts.voices import VoiceStore

MAX_NEW = 40
LONG = ("This is the first sentence of a longer text that the server splits into pieces, because it is long. "
        "And here is a second sentence, which becomes the next piece of the same request, spoken right after it.")


def arun(coro):
    return asyncio.run(coro)


def pcm16(x):
    return (np.clip(np.asarray(x), -1, 1) * 32767.0).round().astype("<i2")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path_factory.mktemp("voices")), greedy=True, max_new_tokens=MAX_NEW)
    eng.ensure_loading()
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def lib():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


@pytest.fixture
def server(engine):
    """`server(**cfg)`: a ServerThread on the shared engine, stopped after the test."""
    made = []

    def make(**kw):
        s = ServerThread(ServerConfig(**kw), engine)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


TRACEBACK_EXPECTED = {"test_failing_row_fails_only_its_request"}  # an internal failure is logged with its trace for the operator


@pytest.fixture(autouse=True)
def no_traceback(request, capfd, caplog):
    """The server's log (this process's stderr and logging) has no traceback after the test."""
    yield
    if request.node.name in TRACEBACK_EXPECTED:
        return
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text, caplog.text[-3000:]


def lib_audio(lib, text, **kw):
    kw = dict(language="auto", do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW, **kw)
    return pcm16(torch.cat([c.audio for c in lib.stream(text, **kw)]))


class StepHook:
    """Wraps the engine model's public batched frame step (`tts.generator.next_frames`): records
    batch sizes, sleeps `delay` per step, and raises for a batch holding a state whose seed is
    `fail_seed` (as a row whose input breaks the batched step would)."""

    def __init__(self, engine, delay=0.0, fail_seed=None):
        self.engine, self.delay, self.fail_seed, self.sizes = engine, delay, fail_seed, []

    def __enter__(self):
        gen = self.engine.tts.generator
        orig = gen.next_frames

        def next_frames(states):
            self.sizes.append(len(states))
            time.sleep(self.delay)
            if self.fail_seed is not None and any(st.settings.seed == self.fail_seed for st in states):
                raise RuntimeError("injected failure of one row")
            return orig(states)

        gen.next_frames = next_frames
        return self

    def __exit__(self, *exc):
        del self.engine.tts.generator.next_frames  # back to the class method


async def speak_and_collect(c, text, rid, **extra):
    await c.send({"type": "speak", "text": text, "id": rid, **extra})
    while True:
        m = await c.next(timeout=120)
        if isinstance(m, dict) and m.get("id") == rid and m["type"] in ("complete", "error"):
            return m


# ---------------------------------------------------------------------------- 1. decode bombs


def _wav(samples, rate, subtype):
    b = io.BytesIO()
    sf.write(b, samples, rate, format="WAV", subtype=subtype)
    return b.getvalue()


def _flac_hour_of_silence(unknown_length=False):
    b = io.BytesIO()
    sf.write(b, np.zeros(3600 * 24000, np.float32), 24000, format="FLAC", subtype="PCM_16")
    d = bytearray(b.getvalue())
    if unknown_length:  # STREAMINFO total_samples = 0 ("unknown"): the header says nothing about the length
        d[21] &= 0xF0
        d[22:26] = b"\0\0\0\0"
    return bytes(d)


def _peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc to read the server's peak memory")
def test_decode_bombs_are_refused_from_the_header(tmp_path):
    """A real server process: uploads that decode to hours of audio (1 Hz 8-bit WAV, an hour of
    FLAC silence, the same FLAC with its length erased from the header) are refused with 400 and
    the server's peak memory (VmHWM) grows by less than ~10x a decoded 30 s clip."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "qwen3tts.serve", "--model", str(TINY_MODEL), "--voices-dir", str(tmp_path / "v"),
                          "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    bombs = {"wav_1hz": _wav(np.zeros(2000, np.float32), 1, "PCM_U8"),  # 2 KB: 2000 s at 1 Hz (old code: ~48M samples at 24 kHz)
             "flac_1h": _flac_hour_of_silence(),
             "flac_1h_no_length": _flac_hour_of_silence(unknown_length=True),
             "wav_48k_60s": _wav(np.zeros(60 * 48000, np.float32), 48000, "PCM_16")}
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)

                async def post(name, data, transcript=""):
                    form = aiohttp.FormData()
                    form.add_field("audio", data, filename="clip.bin", content_type="application/octet-stream")
                    form.add_field("id", name.replace("_", "-"))
                    if transcript:
                        form.add_field("transcript", transcript)
                    async with http.post(f"http://127.0.0.1:{port}/api/v1/voices", data=form) as r:
                        return r.status, await r.json()
                out = {"good": await post("good", (TINY / "reference.wav").read_bytes())}  # imports the decoders once
                base = _peak_rss_mb(p.pid)
                for name, data in bombs.items():
                    out[name] = await post(name, data)
                out["junk"] = await post("junk", b"RIFF\0\0\0\0WAVEfmt garbage")
                return out, base, _peak_rss_mb(p.pid)
        out, base, peak = arun(go())
    finally:
        p.terminate()
        log = p.communicate(timeout=30)[0].decode(errors="replace")
    assert out["good"][0] == 201, out["good"]
    # 30 s decoded at 24 kHz float32 = 2.9 MB; the bombs (hundreds of MB decoded) must not get near 10x that
    assert peak - base < 29, (base, peak)
    assert out["wav_1hz"][0] == 400 and out["wav_1hz"][1]["error"]["code"] == "BAD_AUDIO"
    assert "below the minimum of 8000 Hz" in out["wav_1hz"][1]["error"]["message"]
    for name in ("flac_1h", "flac_1h_no_length", "wav_48k_60s"):
        assert out[name][0] == 400 and out[name][1]["error"]["code"] == "BAD_DURATION", (name, out[name])
    assert "3600.0 s" in out["flac_1h"][1]["error"]["message"]
    assert out["junk"][0] == 400 and out["junk"][1]["error"]["code"] == "BAD_AUDIO"
    for name, (_, body) in out.items():
        msg = json.dumps(body)
        assert "0x" not in msg and "BytesIO" not in msg and str(tmp_path) not in msg, msg
    assert "Traceback" not in log, log[-3000:]


def test_upload_limits_in_the_library_path(tmp_path):
    """`VoiceStore.add` (what the route calls) applies the same limits; a clip within them is stored."""
    store = VoiceStore(tmp_path)
    from qwen3tts.voices import VoiceError

    with pytest.raises(VoiceError) as e:
        store.add(_flac_hour_of_silence(unknown_length=True), voice_id="x")
    assert e.value.code == "BAD_DURATION"
    with pytest.raises(VoiceError) as e:
        store.add((np.zeros(40 * 24000, np.float32), 24000), voice_id="y")
    assert e.value.code == "BAD_DURATION"
    stereo = np.random.default_rng(0).standard_normal((5 * 44100, 2)).astype(np.float32) * 0.1
    b = io.BytesIO()
    sf.write(b, stereo, 44100, format="WAV", subtype="FLOAT")
    info = store.add(b.getvalue(), voice_id="ok")
    assert info.durationSec == 5.0


# ---------------------------------------------------------------------------- 2. Origin / Host


def test_origin_and_host_policy(server, engine):
    s = server()
    port = s.cfg.port
    own = f"http://127.0.0.1:{port}"

    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            evil = {"Origin": "http://evil.example"}
            async with http.get(s.url + "/api/v1/voices", headers=evil) as r:
                out["list_evil"] = r.status, await r.json()
            form = aiohttp.FormData()
            form.add_field("audio", (TINY / "reference.wav").read_bytes(), filename="a.wav")
            form.add_field("id", "csrf")
            async with http.post(s.url + "/api/v1/voices", data=form, headers=evil) as r:
                out["upload_evil"] = r.status
            async with http.post(s.url + "/v1/audio/speech", data='{"input": "hi"}', headers={**evil, "Content-Type": "text/plain"}) as r:
                out["speech_evil"] = r.status
            try:
                await http.ws_connect(s.ws_url, headers=evil)
                out["ws_evil"] = "open"
            except aiohttp.WSServerHandshakeError as e:
                out["ws_evil"] = e.status
            async with http.get(s.url + "/api/v1/voices", headers={"Origin": "null"}) as r:
                out["null_origin"] = r.status
            # DNS rebinding: a foreign Host on a loopback bind
            async with http.get(s.url + "/api/v1/voices", headers={"Host": "evil.example"}) as r:
                out["list_rebind"] = r.status, await r.json()
            async with http.delete(s.url + "/api/v1/voices/anything", headers={"Host": f"evil.example:{port}"}) as r:
                out["delete_rebind"] = r.status
            # the server's own origin, loopback names and non-browser clients work
            c = await connect(http, s.ws_url, headers={"Origin": own})
            out["ws_own"] = (await c.ready())["type"]
            await c.ws.close()
            c = await connect(http, f"ws://localhost:{port}/api/v1/speak", headers={"Origin": f"http://localhost:{port}"})
            out["ws_localhost"] = (await c.ready())["type"]
            await c.ws.close()
            async with http.get(s.url + "/api/v1/voices", headers={"Origin": own}) as r:
                out["list_own"] = r.status
            async with http.get(s.url + "/speak", headers={"Host": f"[::1]:{port}"}) as r:
                out["page_ipv6_host"] = r.status
            async with http.get(s.url + "/api/v1/voices") as r:
                out["list_plain"] = r.status
            async with http.get(s.url + "/api/v1/voices", headers={"Origin": f"http://127.0.0.1:{port + 1}"}) as r:
                out["other_port"] = r.status
        return out
    out = arun(go())
    assert out["list_evil"][0] == 403 and out["list_evil"][1]["error"]["code"] == "FORBIDDEN_ORIGIN"
    assert out["upload_evil"] == 403 and out["speech_evil"] == 403 and out["ws_evil"] == 403 and out["null_origin"] == 403
    assert out["list_rebind"][0] == 403 and out["list_rebind"][1]["error"]["code"] == "FORBIDDEN_HOST"
    assert out["delete_rebind"] == 403
    assert out["ws_own"] == "ready" and out["ws_localhost"] == "ready"
    assert out["list_own"] == 200 and out["page_ipv6_host"] == 200 and out["list_plain"] == 200
    assert out["other_port"] == 403  # another port is another origin
    assert not engine.voices.exists("csrf")


def test_allowed_origins_and_hosts(server):
    s = server(allowed_origins="https://app.example.com, http://tools.example:8080", allowed_hosts="tts.example.com")
    star = server(allowed_origins="*", allowed_hosts="*")

    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            app = {"Origin": "https://app.example.com"}
            async with http.get(s.url + "/api/v1/voices", headers=app) as r:
                out["listed"] = r.status, r.headers.get("Access-Control-Allow-Origin")
            async with http.options(s.url + "/v1/audio/speech", headers={**app, "Access-Control-Request-Method": "POST",
                                                                          "Access-Control-Request-Headers": "content-type"}) as r:
                out["preflight"] = r.status, r.headers.get("Access-Control-Allow-Methods", "")
            c = await connect(http, s.ws_url, headers={"Origin": "http://tools.example:8080"})
            out["ws_listed"] = (await c.ready())["type"]
            await c.ws.close()
            async with http.get(s.url + "/api/v1/voices", headers={"Origin": "http://tools.example"}) as r:  # port 80 is not 8080
                out["wrong_port"] = r.status
            # behind a reverse proxy that forwards Host: tts.example.com
            async with http.get(s.url + "/api/v1/voices", headers={"Host": "tts.example.com", "Origin": "http://tts.example.com"}) as r:
                out["proxied"] = r.status
            async with http.get(s.url + "/api/v1/voices", headers={"Host": "other.example.com"}) as r:
                out["other_host"] = r.status
            async with http.get(star.url + "/api/v1/voices", headers={"Host": "any.example", "Origin": "https://x.example"}) as r:
                out["star"] = r.status
        return out
    out = arun(go())
    assert out["listed"] == (200, "https://app.example.com")
    assert out["preflight"][0] == 204 and "POST" in out["preflight"][1]
    assert out["ws_listed"] == "ready" and out["wrong_port"] == 403
    assert out["proxied"] == 200 and out["other_host"] == 403 and out["star"] == 200


def test_host_guard_only_on_a_loopback_bind():
    from qwen3tts.server.access import AccessPolicy

    assert not AccessPolicy("127.0.0.1").host_allowed("evil.example")
    assert not AccessPolicy("localhost").host_allowed("evil.example:80")
    assert AccessPolicy("127.0.0.1").host_allowed("LOCALHOST.:8765") and AccessPolicy("::1").host_allowed("[::1]:1")
    assert AccessPolicy("0.0.0.0").host_allowed("evil.example")  # a public bind: the operator names the hosts it serves


# ---------------------------------------------------------------------------- 3. one client never fails another


def test_bad_seed_fails_alone_and_other_session_completes(server, engine, lib):
    s = server()

    async def go():
        async with aiohttp.ClientSession() as http:
            a = await connect(http, s.ws_url)
            b = await connect(http, s.ws_url)
            await a.ready()
            await b.ready()
            await a.send({"type": "speak", "text": LONG, "id": "a"})
            while not isinstance(await a.next(), bytes):  # a is generating
                pass
            errs = {}
            for name, seed in (("over", 2**64), ("max64", 2**64 - 1), ("neg", -1)):
                await b.send({"type": "speak", "text": LONG, "id": name, "seed": seed})
                errs[name] = await b.type("error")
            await b.ws.send_str('{"type": "speak", "text": "lone \\ud800 surrogate", "id": "sur"}')
            errs["surrogate"] = await b.type("error")
            done_a = await a.until(lambda m: m.get("id") == "a" and m["type"] in ("complete", "error"))
            big = await speak_and_collect(b, LONG, "big", seed=2**63 - 1)  # every piece's seed (seed + i) fits
            return errs, done_a, bytes(a.audio), big
    with StepHook(engine, delay=0.01):
        errs, done_a, audio_a, big = arun(go())
    assert {k: v["code"] for k, v in errs.items()} == {"over": "INVALID_MESSAGE", "max64": "INVALID_MESSAGE", "neg": "INVALID_MESSAGE",
                                                       "surrogate": "INVALID_TEXT"}
    assert done_a["type"] == "complete"
    assert audio_a == lib_audio(lib, LONG).tobytes()
    assert big["type"] == "complete"


def test_engine_admission_validates_requests(engine, lib):
    """Requests submitted to the engine directly (its public API, no protocol in front): an
    out-of-range seed or unencodable text fails that request with its code at admission, while
    another request in flight completes with the right audio."""
    loop = asyncio.new_event_loop()
    try:
        async def go():
            inboxes = {k: asyncio.Queue() for k in ("good", "seed", "text")}
            good = Request(text=LONG, voice_id=None, language="auto", loop=loop, deliver=inboxes["good"].put_nowait)
            engine.submit(good)
            first = await inboxes["good"].get()
            assert first[0] == "audio"
            good.consumed()
            engine.submit(Request(text=LONG, voice_id=None, language="auto", loop=loop, deliver=inboxes["seed"].put_nowait, seed=2**64 - 1))
            # (2**64 - 1 seeds piece 0 fine; piece 1 would get 2**64)
            engine.submit(Request(text="bad \ud800 text", voice_id=None, language="auto", loop=loop, deliver=inboxes["text"].put_nowait))
            errs = {k: await inboxes[k].get() for k in ("seed", "text")}
            chunks = [first[1]]
            while (ev := await inboxes["good"].get())[0] == "audio":
                good.consumed()
                chunks.append(ev[1])
            return errs, ev, np.concatenate(chunks)
        with StepHook(engine, delay=0.02):
            errs, last, audio = loop.run_until_complete(go())
    finally:
        loop.close()
    assert errs["seed"][:2] == ("error", "INVALID_MESSAGE") and "seed" in errs["seed"][2]
    assert errs["text"][:2] == ("error", "INVALID_TEXT")
    assert last[0] == "done" and pcm16(audio).tobytes() == lib_audio(lib, LONG).tobytes()


def test_failing_row_fails_only_its_request(server, engine, lib):
    s = server()

    async def go():
        async with aiohttp.ClientSession() as http:
            a = await connect(http, s.ws_url)
            b = await connect(http, s.ws_url)
            await a.ready()
            await b.ready()
            await a.send({"type": "speak", "text": LONG, "id": "a", "seed": 1})
            while not isinstance(await a.next(), bytes):
                pass
            err_b = await speak_and_collect(b, "Please fail.", "b", seed=4242)
            after_b = await speak_and_collect(b, "Still here.", "b2", seed=7)
            done_a = await a.until(lambda m: m.get("id") == "a" and m["type"] in ("complete", "error"))
            return err_b, after_b, done_a, bytes(a.audio)
    with StepHook(engine, delay=0.02, fail_seed=4242) as hook:
        err_b, after_b, done_a, audio_a = arun(go())
    assert 2 in hook.sizes  # a and b were in one batched step when b's row failed
    assert err_b["code"] == "SYNTHESIS_ERROR" and "injected" in err_b["message"]
    assert after_b["type"] == "complete"
    assert done_a["type"] == "complete" and audio_a == lib_audio(lib, LONG).tobytes()


def test_batch_step_isolates_a_failing_piece(lib):
    """Library level, no hook: utterance y's second piece is seeded past torch's 64-bit range (its
    plan altered after validation), so starting that piece raises inside `step`; x, batched with
    it, goes on and equals its stream alone, and y ends with the error."""
    from qwen3tts.batch import Utterance, step

    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)
    x = Utterance(lib, LONG, **kw)
    y = Utterance(lib, LONG, **kw, seed=0)
    assert len(y.plan.prompts) == 2
    y.plan.settings = replace(y.plan.settings, seed=2**64 - 1)  # piece 1: 2**64 -> manual_seed overflows
    got = []
    while not x.done:
        for u, chunk in zip((x, y), step(lib, [x, y])):
            if u is x and chunk is not None:
                got.append(chunk.audio)
    assert y.done and "Overflow" in str(y.error)  # torch's own error, from manual_seed
    assert pcm16(torch.cat(got)).tobytes() == lib_audio(lib, LONG).tobytes()
    with pytest.raises(ValueError, match="seed"):
        list(lib.stream(LONG, seed=2**64 - 1, **kw))


# ---------------------------------------------------------------------------- 4. admission shared with the OpenAI route


def test_openai_route_shares_max_sessions(server, engine):
    s = server(max_sessions=1)

    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            c = await connect(http, s.ws_url)
            await c.ready()
            async with http.post(s.url + "/v1/audio/speech", json={"input": "Busy?"}) as r:
                out["busy"] = r.status, r.headers.get("Retry-After"), await r.json()
            await c.ws.close()
            await asyncio.sleep(0.2)  # the session's slot is released when its handler ends
            async with http.post(s.url + "/v1/audio/speech", json={"input": "Free now.", "response_format": "pcm"}) as r:
                out["free"] = r.status, len(await r.read())
            # an HTTP request in flight holds the slot: a new WebSocket session is refused
            async with http.post(s.url + "/v1/audio/speech", json={"input": LONG, "response_format": "pcm"}) as r:
                await r.content.readexactly(3840)
                w = await connect(http, s.ws_url)
                out["ws"] = await w.next()
                await w.next()
                out["ws_close"] = w.ws.close_code
                out["in_flight_rest"] = r.status, len(await r.read())
            await asyncio.sleep(0.2)
            c = await connect(http, s.ws_url)
            out["ws_after"] = (await c.ready())["type"]
            await c.ws.close()
        return out
    with StepHook(engine, delay=0.02):
        out = arun(go())
    status, retry, body = out["busy"]
    assert status == 429 and retry is not None and int(retry) >= 1 and body["error"]["code"] == "RATE_LIMITED"
    assert out["free"][0] == 200 and out["free"][1] > 0
    assert out["ws"]["type"] == "error" and out["ws"]["code"] == "RATE_LIMITED" and out["ws_close"] == 1013
    assert out["in_flight_rest"][0] == 200 and out["ws_after"] == "ready"
    for _ in range(100):  # the last session's handler releases its slot as it ends
        if s.server.admission.in_use == 0:
            break
        time.sleep(0.05)
    assert s.server.admission.in_use == 0


# ---------------------------------------------------------------------------- 5. unauthenticated sockets


def test_unauthenticated_sockets_hold_no_slot_and_time_out(server):
    s = server(auth_token="sesame", max_sessions=2, auth_timeout=1.5)

    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            idle = [await connect(http, s.ws_url) for _ in range(2)]
            for c in idle:
                await c.ready()
            holder = await connect(http, s.ws_url)
            await holder.ready()
            await holder.send({"type": "start", "authToken": "sesame"})
            out["holder"] = (await holder.type("started"))["type"]
            second = await connect(http, s.ws_url, headers={"Authorization": "bearer sesame"})  # scheme is case-insensitive
            await second.ready()
            await second.send({"type": "start"})
            out["second"] = (await second.type("started"))["type"]
            third = await connect(http, s.ws_url)
            await third.ready()
            await third.send({"type": "start", "authToken": "sesame"})
            out["third"] = await third.type("error")
            await third.next()
            out["third_close"] = third.ws.close_code
            for i, c in enumerate(idle):
                out[f"idle{i}"] = await c.type("error", timeout=30)
                await c.next()
                out[f"idle{i}_close"] = c.ws.close_code
            out["in_use"] = s.server.admission.in_use
            await holder.ws.close()
            await second.ws.close()
        return out
    out = arun(go())
    assert out["holder"] == "started" and out["second"] == "started"
    assert out["third"]["code"] == "RATE_LIMITED" and out["third_close"] == 1013  # two authenticated sessions: full
    for i in range(2):
        assert out[f"idle{i}"]["code"] == "UNAUTHORIZED" and out[f"idle{i}_close"] == 1008
    assert out["in_use"] == 2


# ---------------------------------------------------------------------------- 6. inputs that used to end in a traceback


def test_unhandled_websocket_inputs(server):
    s = server(auth_token="sesame")

    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            c = await connect(http, s.ws_url)
            await c.ready()
            await c.ws.send_str('{"type": "start", "authToken": "\\ud800"}')
            out["token"] = await c.type("error")
            await c.next()
            out["token_close"] = c.ws.close_code
            c = await connect(http, s.ws_url, headers={"Authorization": "BEARER sesame"})
            await c.ready()
            await c.ws.send_str('{"type": "speak", "text": "\\udfff"}')
            out["text"] = await c.type("error")
            await c.send({"type": "speak", "text": "x" * (2 << 20)})  # over the protocol's 1 MiB, under the frame limit
            out["big"] = await c.type("error")
            out["after_big"] = (await speak_and_collect(c, "Still open.", "ok"))["type"]
            try:  # over the frame limit: error, then close 1009 (the server may close before the client has written it all)
                await c.send({"type": "speak", "text": "x" * (5 << 20)})
            except ConnectionError:
                pass
            out["huge"] = await c.type("error")
            await c.next()
            out["huge_close"] = c.ws.close_code
            async with http.delete(s.url + "/api/v1/voices/nobody", headers={"Authorization": "bEaReR sesame"}) as r:
                out["http_bearer"] = r.status
            async with http.delete(s.url + "/api/v1/voices/nobody", headers={"Authorization": "Bearer wrong"}) as r:
                out["http_wrong"] = r.status
        return out
    out = arun(go())
    assert out["token"]["code"] == "UNAUTHORIZED" and out["token_close"] == 1008
    assert out["text"]["code"] == "INVALID_TEXT"
    assert out["big"]["code"] == "INVALID_MESSAGE" and "too large" in out["big"]["message"] and out["after_big"] == "complete"
    assert out["huge"]["code"] == "INVALID_MESSAGE" and "too large" in out["huge"]["message"]
    assert out["huge_close"] in (1009, 1006)  # 1009 sent; a client still writing the frame may see the reset (1006) instead
    assert out["http_bearer"] == 404 and out["http_wrong"] == 401


def test_messages_carry_no_paths(tmp_path):
    """A model that fails to load: /healthz and the session's MODEL_LOADING error name no path."""
    missing = tmp_path / "secret-dir" / "model"
    eng = Engine(str(missing), voices=VoiceStore(tmp_path / "v"))
    s = ServerThread(ServerConfig(), eng)
    try:
        async def go():
            async with aiohttp.ClientSession() as http:
                c = await connect(http, s.ws_url)
                err = await c.type("error")
                async with http.get(s.url + "/healthz") as r:
                    health = await r.json()
                return err, health
        err, health = arun(go())
    finally:
        s.stop()
        eng.shutdown()
    assert err["code"] == "MODEL_LOADING" and health["model"] == "not_loaded" and health.get("error")
    for text in (err["message"], json.dumps(health)):
        assert str(tmp_path) not in text and "secret-dir" not in text, text
