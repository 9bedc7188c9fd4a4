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
