"""Streamed text over the speak WebSocket (docs/protocol.md "Streamed text"): speak with
final: false + text messages gives the library's audio (PCM16 within 1 LSB), cancel cuts it at
once and the session goes on, requests queue behind it, and every new error path."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
import torch

from conftest import TINY, TINY_MODEL
from server_util import ServerThread, connect
from qwen3tts.server.app import ServerConfig
from qwen3tts.server.engine import Engine
from qwen3tts.voices import VoiceStore

TEXT = "Hello there, it's a test of 42 words. Is this streamed?"
MAX_NEW = 16


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path_factory.mktemp("voices")), greedy=True, max_new_tokens=MAX_NEW)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def srv(engine):
    s = ServerThread(ServerConfig(max_sessions=6, max_queue=3, max_chars=300, text_timeout=1.0), engine)
    yield s
    s.stop()


def pcm16(x):
    return (np.clip(np.asarray(x), -1, 1) * 32767.0).round().astype("<i2")


async def session(http, srv, **start):
    c = await connect(http, srv.ws_url)
    await c.ready()
    await c.send({"type": "start", **start})
    await c.type("started")
    return c


def test_streamed_text_equals_library(srv, engine):
    """No reference voice and an x-vector voice, text cut every 3 characters (inside words)."""
    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("audio", (TINY / "reference.wav").read_bytes(), filename="a.wav", content_type="audio/wav")
            form.add_field("id", "xv")
            form.add_field("mode", "xvector")
            async with http.post(srv.url + "/api/v1/voices", data=form) as r:
                assert r.status == 201, await r.text()
            for voice in ("default", "xv"):
                c = await session(http, srv, voice=voice, language="English")
                pieces = [TEXT[i : i + 3] for i in range(0, len(TEXT), 3)]
                await c.send({"type": "speak", "text": pieces[0], "final": False, "id": "s"})
                for p in pieces[1:]:
                    await c.send({"type": "text", "text": p})
                await c.send({"type": "text", "text": "", "final": True})
                done = await c.type("complete")
                assert done["id"] == "s" and done["charactersProcessed"] == len(TEXT)
                out[voice] = np.frombuffer(bytes(c.audio), dtype="<i2")
                await c.ws.close()
        return out

    got = asyncio.run(go())
    tts = engine.tts
    kw = dict(language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)
    xv = tts.create_voice_prompt(TINY / "reference.wav", x_vector_only=True)
    for voice, v in (("default", None), ("xv", xv)):
        ref = pcm16(torch.cat([ch.audio for ch in tts.stream(TEXT, voice=v, **kw)]))
        assert got[voice].shape == ref.shape and np.abs(got[voice].astype(int) - ref.astype(int)).max() <= 1


def test_cancel_mid_text_and_session_goes_on(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await session(http, srv)
            await c.send({"type": "speak", "text": "A long sentence that keeps", "final": False, "id": "s"})
            await c.send({"type": "speak", "text": "Queued behind it.", "id": "q"})
            await c.type("speaking")
            while not isinstance(await c.next(), bytes):
                pass
            await c.send({"type": "text", "text": " going and"})
            n_before = len(c.audio)
            await c.send({"type": "cancel"})
            errs = []
            while len(errs) < 2:
                m = await c.next()
                if isinstance(m, dict) and m["type"] == "error":
                    errs.append(m)
            after = len(c.audio) - n_before
            await c.send({"type": "text", "text": " more"})  # nothing is open any more
            err = await c.type("error")
            await c.send({"type": "speak", "text": "After cancel.", "id": "after"})
            done = await c.type("complete")
            return errs, after, err, done

    errs, after, err, done = asyncio.run(go())
    assert sorted(e["id"] for e in errs) == ["q", "s"] and all(e["code"] == "CANCELLED" for e in errs)
    assert after <= 3840  # at most the frame already on its way when the cancel was read
    assert err["code"] == "INVALID_TEXT" and err["recoverable"] is True
    assert done["id"] == "after"


def test_queued_request_waits_for_the_open_stream(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await session(http, srv)
            await c.send({"type": "speak", "text": "First words", "final": False, "id": "s", "lookahead": 2})
            await c.send({"type": "speak", "text": "Second request.", "id": "q"})
            await c.type("speaking")
            await asyncio.sleep(0.3)
            await c.send({"type": "text", "text": " and the rest.", "final": True})
            order = []
            while len(order) < 3:
                m = await c.next()
                if isinstance(m, dict):
                    order.append((m["type"], m["id"]))
            return order

    assert asyncio.run(go()) == [("complete", "s"), ("speaking", "q"), ("complete", "q")]


def test_error_paths(srv):
    async def go():
        res = {}
        async with aiohttp.ClientSession() as http:
            c = await session(http, srv)
            await c.send({"type": "text", "text": "orphan"})
            res["orphan"] = await c.type("error")
            await c.send({"type": "speak", "text": "x", "final": "no"})
            res["bad_final"] = await c.type("error")
            await c.send({"type": "speak", "text": "x", "final": False, "lookahead": -1, "id": "la"})
            res["lookahead"] = await c.type("error")
            await c.send({"type": "speak", "text": "Open", "final": False, "id": "s1"})
            await c.send({"type": "speak", "text": "Again", "final": False, "id": "s2"})
            res["second_open"] = await c.type("error")
            await c.send({"type": "text", "text": 5})
            res["text_type"] = await c.type("error")
            await c.send({"type": "text", "text": "\ud800"})
            res["surrogate"] = await c.type("error")
            await c.send({"type": "text", "text": " and" * 50})
            await c.send({"type": "text", "text": " and" * 50})  # over max_chars=300 for the whole request
            res["too_long"] = await c.type("error")
            await c.send({"type": "speak", "text": "  ", "final": False, "id": "e"})
            await c.send({"type": "text", "text": " ", "final": True})
            res["empty"] = await c.type("error")
            await c.send({"type": "speak", "text": "Silent writer", "final": False, "id": "t"})
            res["timeout"] = await c.type("error", timeout=30)
            await c.send({"type": "speak", "text": "Still here.", "id": "ok"})
            res["ok"] = await c.type("complete")
        return res

    r = asyncio.run(go())
    assert r["orphan"]["code"] == "INVALID_TEXT" and r["orphan"]["recoverable"] is True
    assert r["bad_final"]["code"] == "INVALID_MESSAGE" and "final" in r["bad_final"]["message"]
    assert r["lookahead"]["code"] == "INVALID_MESSAGE" and r["lookahead"]["id"] == "la"
    assert r["second_open"]["code"] == "INVALID_MESSAGE" and r["second_open"]["id"] == "s2"
    assert r["text_type"]["code"] == "INVALID_MESSAGE"
    assert r["surrogate"]["code"] == "INVALID_TEXT" and "surrogate" in r["surrogate"]["message"]
    assert r["too_long"]["code"] == "INVALID_TEXT" and r["too_long"]["id"] == "s1" and "300" in r["too_long"]["message"]
    assert r["empty"]["code"] == "INVALID_TEXT" and r["empty"]["id"] == "e"
    assert r["timeout"]["code"] == "TIMEOUT" and r["timeout"]["id"] == "t" and "--text-timeout" in r["timeout"]["message"]
    assert r["ok"]["id"] == "ok"


def test_streamed_request_aborted_while_queued(srv):
    """A streamed request still in the queue that ends with no text fails at once, while the
    request ahead of it goes on and completes."""
    async def go():
        async with aiohttp.ClientSession() as http:
            c = await session(http, srv)
            await c.send({"type": "speak", "text": "A request that speaks first, for a while.", "id": "first"})
            await c.send({"type": "speak", "text": "", "final": False, "id": "s"})
            await c.send({"type": "text", "text": "  ", "final": True})
            got = []
            while len(got) < 2:
                m = await c.next()
                if isinstance(m, dict) and m["type"] in ("error", "complete"):
                    got.append(m)
            return got

    done, err = sorted(asyncio.run(go()), key=lambda m: m["type"])
    assert err["type"] == "error" and err["code"] == "INVALID_TEXT" and err["id"] == "s" and "empty" in err["message"]
    assert done["type"] == "complete" and done["id"] == "first"
