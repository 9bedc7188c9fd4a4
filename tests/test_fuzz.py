"""Hypothesis fuzzing of incoming speak messages: the parser never raises anything but a
ProtocolError with a spec code, and a live server answers every bad message with an error and
keeps the session (and itself) alive."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_util import ServerThread, connect
from qwen3tts.server import protocol as P
from qwen3tts.server.app import ServerConfig

LIMITS = P.Limits(max_chars=200, languages=("auto", "English", "Chinese"))
KEYS = ["type", "text", "id", "priority", "sampleRate", "encoding", "voice", "language", "transport", "authToken", "contractId", "reason", "seed"]
TYPES = ["start", "speak", "cancel", "stop", "Start", "", "speak ", "audio"]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=40), st.sampled_from([24000, 16000, 12345, "pcm16", "pcm32f", "json", "binary", "high", "English", "x" * 250]))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)), max_leaves=8)
message = st.dictionaries(st.sampled_from(KEYS), json_value, max_size=6).flatmap(
    lambda d: st.sampled_from(TYPES).map(lambda t: {**d, "type": t}) if "type" not in d or not isinstance(d["type"], str) else st.just(d))
raw = st.one_of(message.map(json.dumps), st.text(max_size=80), st.binary(max_size=40),
                json_value.map(json.dumps), st.just('{"type": "speak", "text": ' + json.dumps("a" * 300) + "}"))


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw)
def test_parser_never_crashes(data):
    try:
        m = P.parse(data, LIMITS)
    except P.ProtocolError as e:
        assert e.code in P.ERROR_CODES and e.message
        return
    assert m["type"] in ("start", "speak", "cancel", "stop")
    if m["type"] == "speak":
        assert 0 < len(m["text"]) <= LIMITS.max_chars and m["priority"] in P.PRIORITIES
    if m["type"] == "start":
        assert m["sampleRate"] in (None, *P.SAMPLE_RATES) and m["encoding"] in (None, *P.ENCODINGS)


SERVER_TYPES = {"loading", "ready", "started", "speaking", "audioChunk", "complete", "error", "stopped"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    from conftest import TINY_MODEL
    from qwen3tts.server.engine import Engine
    from qwen3tts.voices import VoiceStore

    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path_factory.mktemp("v")), greedy=True, max_new_tokens=3)
    s = ServerThread(ServerConfig(max_chars=200, max_queue=4), eng)
    yield s
    s.stop()
    eng.shutdown()


def test_live_server_fuzz(fuzz_server):
    """400 fuzzed messages over live connections; each is followed by a probe whose error must
    come back, so a hang or a dead session fails the test."""
    examples = []

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(raw)
    def collect(d):
        examples.append(d)

    collect()
    assert len(examples) >= 300

    async def go():
        stats = {"errors": 0, "reconnects": 0}
        async with aiohttp.ClientSession() as http:
            c = await connect(http, fuzz_server.ws_url)
            await c.ready()
            for i, d in enumerate(examples):
                if isinstance(d, bytes):
                    await c.ws.send_bytes(d)
                else:
                    await c.send(d)
                probe = f"probe-{i}"
                await c.send({"type": probe})
                while True:
                    m = await c.next(timeout=20)
                    if isinstance(m, bytes):
                        continue
                    if isinstance(m, aiohttp.WSMessage):  # a fuzzed valid `stop` or UNAUTHORIZED closes: reconnect
                        assert c.ws.close_code in (1000, 1008), c.ws.close_code
                        stats["reconnects"] += 1
                        c = await connect(http, fuzz_server.ws_url)
                        await c.ready()
                        break
                    assert m["type"] in SERVER_TYPES
                    if m["type"] == "error":
                        assert m["code"] in P.ERROR_CODES and isinstance(m["message"], str)
                        stats["errors"] += 1
                        if probe in m["message"]:
                            break
                    if m["type"] == "stopped":
                        continue
                await c.send({"type": "cancel"})
            # still healthy: a real request completes
            await c.send({"type": "start", "sampleRate": 24000, "encoding": "pcm16", "transport": "binary"})
            await c.type("started")
            await c.send({"type": "speak", "text": "Still fine.", "id": "final"})
            done = await c.until(lambda m: m["type"] == "complete" and m["id"] == "final")
            return stats, done
    stats, done = asyncio.run(go())
    assert done["type"] == "complete" and stats["errors"] >= len(examples)


# ---------------------------------------------------------------------------- HTTP routes

SPEECH_KEYS = ["input", "model", "voice", "response_format", "stream_format", "speed", "instructions", "language"]
odd_text = st.one_of(st.text(max_size=30), st.text(st.characters(codec="utf-8"), max_size=10), st.sampled_from(
    ["Hi.", "\x00", "\ud800", "a\u202eb", "\ufeff", "🙂" * 3, " ", "x" * 250, "Hello\r\nthere", "<script>"]))
big_number = st.sampled_from([2**64, -2**63, 10**30, 1e308, -0.0, 5e-324, 0, 1, 4.0, 0.25])
speech_value = st.one_of(json_value, odd_text, big_number, st.sampled_from(
    ["mp3", "opus", "flac", "wav", "pcm", "aac", "MP3", "sse", "audio", "alloy", "default", "tts-1", "English"]))
speech_body = st.dictionaries(st.one_of(st.sampled_from(SPEECH_KEYS), st.text(max_size=6)), speech_value, max_size=7).map(
    lambda d: {"input": "Hi.", **d} if "input" not in d else d)


def _garble(data: bytes, cuts) -> bytes:
    for at, junk in cuts:
        at = at % (len(data) + 1)
        data = data[:at] + junk + data[at + len(junk):]
    return data


speech_raw = st.one_of(
    speech_body.map(lambda d: json.dumps(d).encode()),
    st.tuples(speech_body.map(lambda d: json.dumps(d).encode()), st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=4)), max_size=3))
    .map(lambda t: _garble(*t)),
    st.binary(max_size=60),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 60_000).map(lambda n: b"[" * n),
    st.integers(1, 5000).map(lambda n: b'{"input": "Hi.", "speed": 1' + b"0" * n + b"}"),
    st.sampled_from([b'{"input": "Hi.", "speed": NaN}', b'{"input": "Hi.", "speed": -Infinity}', b"", b"null", b"{}"]),
)
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/json; charset=bogus", "multipart/form-data",
                                 "application/x-www-form-urlencoded", "", "*/*", "application/json; boundary=\u00ff", "audio/wav; q=x"])
header_value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
extra_headers = st.dictionaries(st.sampled_from(["Accept", "Authorization", "Accept-Encoding", "X-Request-Id", "Origin", "Range"]),
                                header_value, max_size=3)

PART_NAMES = st.one_of(st.sampled_from(["audio", "transcript", "name", "id", "language", "mode", "description", "_charset_"]),
                       st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'), max_size=10))
PART_HEADERS = st.lists(st.sampled_from([
    "Content-Type: audio/wav", "Content-Type: text/plain; charset=bogus", "Content-Type: text/plain; charset=latin-1",
    "Content-Type: multipart/mixed; boundary=inner", "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: bogus",
    "Content-Encoding: gzip", "Content-Encoding: deflate", "X-Big: " + "a" * 9000, "Content-Length: -1", "Content-Type: \u00ff/\u00ff"]),
    max_size=2)


def _part_data(wav: bytes):
    return st.one_of(st.binary(max_size=80), odd_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.integers(0, len(wav)).map(lambda n: wav[:n]), st.just(wav),
                     st.just(b"--inner\r\n\r\nx\r\n--inner--\r\n"))


def multipart_bodies(wav: bytes):
    part = st.tuples(PART_NAMES, st.booleans(), PART_HEADERS, _part_data(wav))

    def build(parts, boundary, declared, tail):
        out = b""
        for name, with_file, headers, data in parts:
            disp = f'Content-Disposition: form-data; name="{name}"' + ('; filename="a.wav"' if with_file else "")
            out += f"--{boundary}\r\n{disp}\r\n".encode("utf-8", "surrogatepass") + "".join(h + "\r\n" for h in headers).encode() + b"\r\n" + data + b"\r\n"
        out += f"--{boundary}--\r\n".encode() if tail else b""
        return f"multipart/form-data; boundary={declared or boundary}", out

    return st.builds(build, st.lists(part, max_size=4), st.sampled_from(["XyZb", "b", "a" * 70]), st.sampled_from([None, None, "other"]),
                     st.booleans())


def test_http_routes_fuzz(fuzz_server, caplog, capfd):
    """Fuzzed OpenAI JSON bodies (garbled JSON, wrong types, huge numbers, odd unicode, random
    content types and headers) and multipart voice uploads (odd charsets, nesting, huge part
    headers, encodings, truncated clips): every answer is < 500, and the server logs no traceback."""
    import logging

    from conftest import TINY

    wav = (TINY / "reference.wav").read_bytes()
    speech_cases, upload_cases = [], []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(speech_raw, CONTENT_TYPES, extra_headers)
    def collect_speech(body, ctype, headers):
        speech_cases.append((body, ctype, headers))

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(multipart_bodies(wav), extra_headers)
    def collect_uploads(form, headers):
        upload_cases.append((form, headers))

    collect_speech()
    collect_uploads()

    async def go():
        statuses = []
        async with aiohttp.ClientSession() as http:
            gate = asyncio.Semaphore(8)  # several at once: the engine batches the ones that synthesize

            async def one(body, ctype, headers):
                h = {**headers, "Content-Type": ctype} if ctype else headers
                async with gate, http.post(fuzz_server.url + "/v1/audio/speech", data=body, headers=h) as r:
                    await r.read()
                    statuses.append(("speech", r.status, body[:80]))

            await asyncio.gather(*(one(*case) for case in speech_cases))
            for (ctype, body), headers in upload_cases:
                async with http.post(fuzz_server.url + "/api/v1/voices", data=body, headers={**headers, "Content-Type": ctype}) as r:
                    await r.read()
                    statuses.append(("voices", r.status, body[:80]))
            async with http.post(fuzz_server.url + "/v1/audio/speech", json={"input": "Still fine.", "response_format": "pcm"}) as r:
                final = r.status, len(await r.read())
        return statuses, final

    with caplog.at_level(logging.WARNING):
        statuses, final = asyncio.run(go())
    bad = [s for s in statuses if s[1] >= 500]
    assert not bad, bad[:5]
    assert final[0] == 200 and final[1] > 0
    assert len(statuses) >= 200 and {s[1] for s in statuses} & {200, 201} and 400 in {s[1] for s in statuses}
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


# ---------------------------------------------------------------------------- streamed text
_ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 2000), st.text(max_size=6))
STREAM_MSG = st.one_of(
    st.fixed_dictionaries({"type": st.just("speak"), "text": st.one_of(st.text(max_size=20), _ANY)},
                          optional={"final": st.one_of(st.just(False), _ANY), "id": st.text(min_size=1, max_size=8), "lookahead": _ANY}),
    st.fixed_dictionaries({"type": st.just("text")}, optional={"text": st.one_of(st.text(max_size=30), st.just("w" * 250), _ANY),
                                                               "final": _ANY, "id": _ANY}),
    st.just({"type": "cancel"}),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(STREAM_MSG)
def test_streamed_text_parser(m):
    try:
        got = P.parse(json.dumps(m), LIMITS)
    except P.ProtocolError as e:
        assert e.code in P.ERROR_CODES and e.message
        return
    if got["type"] == "text":
        assert isinstance(got["text"], str) and len(got["text"]) <= LIMITS.max_chars and isinstance(got["final"], bool)
    if got["type"] == "speak" and got["final"] is False:
        assert isinstance(got["text"], str) and 0 <= got["lookahead"] <= P.MAX_LOOKAHEAD


def test_streamed_text_live_fuzz(fuzz_server):
    """Random sequences of speak(final: false) / text / cancel messages on a live session: every
    message that is wrong gets an error, the probe after each always comes back, and a streamed
    request still completes at the end."""
    seqs = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(STREAM_MSG, min_size=1, max_size=6))
    def collect(s):
        seqs.append(s)

    collect()

    async def go():
        async with aiohttp.ClientSession() as http:
            c = await connect(http, fuzz_server.ws_url)
            await c.ready()
            for i, seq in enumerate(seqs):
                for m in seq:
                    await c.send(m)
                probe = f"probe-{i}"
                await c.send({"type": probe})
                while True:
                    m = await c.next(timeout=30)
                    if isinstance(m, bytes):
                        continue
                    assert isinstance(m, dict) and m["type"] in SERVER_TYPES
                    if m["type"] == "error":
                        assert m["code"] in P.ERROR_CODES
                        if probe in m["message"]:
                            break
                await c.send({"type": "cancel"})
            await c.send({"type": "speak", "text": "Still", "final": False, "id": "last"})
            await c.send({"type": "text", "text": " fine.", "final": True})
            return await c.until(lambda m: m["type"] in ("complete", "error") and m.get("id") == "last")

    done = asyncio.run(go())
    assert done["type"] == "complete" and done["charactersProcessed"] == len("Still fine.")
