"""`qwen3tts.integrations.livekit.TTS` with the real `livekit-agents` package against a live speak
server on the tiny fixture (no LiveKit server is needed to drive a TTS): `synthesize` equals the
library's audio, `stream` speaks streamed text sentence by sentence, closing a stream early
cancels the server's work, server errors become APIErrors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL

pytest.importorskip("livekit.agents", reason="livekit-agents is not installed (pip install 'qwen3tts[livekit]')")

from livekit.agents import APIError  # noqa: E402
from livekit.agents.types import APIConnectOptions  # noqa: E402

from qwen3tts.integrations.livekit import TTS  # noqa: E402
from qwen3tts.server.app import ServerConfig  # noqa: E402
from server_util import ServerThread  # noqa: E402

MAX_NEW = 6
NO_RETRY = APIConnectOptions(max_retry=0, timeout=30)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(tmp_path_factory.mktemp("v")), greedy=True, max_new_tokens=MAX_NEW))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def lib():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


def lib_pcm(lib, text) -> bytes:
    audio = torch.cat([c.audio for c in lib.stream(text, voice="default", do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)])
    return (np.clip(audio.numpy(), -1, 1) * 32767.0).round().astype("<i2").tobytes()


def pcm_of(events) -> bytes:
    return b"".join(bytes(e.frame.data.cast("B")) for e in events)


def same_audio(got: bytes, want: bytes) -> bool:
    """Equal, up to the 10 ms of silence LiveKit's AudioEmitter closes a final frame with."""
    tail = got[len(want):]
    return got[: len(want)] == want and len(tail) <= 480 and not any(tail)


def test_capabilities():
    t = TTS(url="ws://127.0.0.1:1/api/v1/speak")
    assert t.capabilities.streaming is True and t.sample_rate == 24000 and t.num_channels == 1
    with pytest.raises(ValueError):
        TTS(sample_rate=12345)


def test_synthesize_equals_library(srv, lib):
    text = "Hello from LiveKit."

    async def go():
        t = TTS(url=srv.ws_url)
        try:
            return [ev async for ev in t.synthesize(text, conn_options=NO_RETRY)]
        finally:
            await t.aclose()

    events = asyncio.run(go())
    assert events and all(e.frame.sample_rate == 24000 and e.frame.num_channels == 1 for e in events)
    assert events[-1].is_final
    assert same_audio(pcm_of(events), lib_pcm(lib, text))


def test_synthesize_resampled(srv):
    async def go():
        t = TTS(url=srv.ws_url, sample_rate=16000)
        try:
            return [ev async for ev in t.synthesize("Sixteen kilohertz.", conn_options=NO_RETRY)]
        finally:
            await t.aclose()

    events = asyncio.run(go())
    assert all(e.frame.sample_rate == 16000 for e in events)
    assert 0 <= sum(e.frame.samples_per_channel for e in events) - (MAX_NEW - 1) * 1280 <= 160 + 2  # + <= 10 ms closing silence


def test_stream_sentence_by_sentence(srv, lib):
    """Tokens cut anywhere; one segment per flush; audio of each sentence equals the library's."""

    async def go():
        t = TTS(url=srv.ws_url)
        try:
            stream = t.stream(conn_options=NO_RETRY)
            for tok in ["The first sen", "tence is here. The sec", "ond one follows."]:
                stream.push_text(tok)
            stream.end_input()
            return [ev async for ev in stream]
        finally:
            await t.aclose()

    events = asyncio.run(go())
    assert len({e.segment_id for e in events}) == 1 and events[-1].is_final
    assert same_audio(pcm_of(events), lib_pcm(lib, "The first sentence is here.") + lib_pcm(lib, "The second one follows."))


def test_stream_closed_early_cancels_on_the_server(tmp_path):
    s = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(tmp_path / "v"), greedy=True, max_new_tokens=400))
    try:
        async def go():
            t = TTS(url=s.ws_url)
            stream = t.stream(conn_options=NO_RETRY)
            stream.push_text("A long sentence that the user will interrupt.")
            stream.flush()
            got = []
            async for ev in stream:
                got.append(ev)
                if len(got) == 2:
                    break
            await stream.aclose()  # what an interruption does
            await t.aclose()
            for _ in range(100):  # the server notices the closed socket and drops the request
                if s.server.engine.queue_depth() == 0 and not s.server.sessions:
                    break
                await asyncio.sleep(0.1)
            return got

        got = asyncio.run(go())
        assert len(got) == 2
        assert s.server.engine.queue_depth() == 0 and not s.server.sessions
        assert s.server.metrics.completed == 0  # the 400-frame request never ran to its end
    finally:
        s.stop()


def test_server_errors_are_api_errors(srv):
    async def go():
        t = TTS(url=srv.ws_url, voice="nobody")
        try:
            with pytest.raises(APIError, match="VOICE_NOT_FOUND"):
                async for _ in t.synthesize("Hi.", conn_options=NO_RETRY):
                    pass
        finally:
            await t.aclose()
        t = TTS(url="ws://127.0.0.1:1/api/v1/speak")
        try:
            with pytest.raises(APIError, match="could not connect"):
                async for _ in t.synthesize("Hi.", conn_options=NO_RETRY):
                    pass
        finally:
            await t.aclose()

    asyncio.run(go())


def test_prewarm_loads_a_lazy_server(tmp_path):
    s = ServerThread(ServerConfig(model=str(TINY_MODEL), voices_dir=str(tmp_path / "v")))
    try:
        assert s.server.engine.status == "not_loaded"

        async def go():
            t = TTS(url=s.ws_url)
            t.prewarm()
            await t._prewarm_task
            await t.aclose()

        asyncio.run(go())
        assert s.server.engine.status == "loaded"
    finally:
        s.stop()
