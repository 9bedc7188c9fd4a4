"""The Wyoming server (`python -m qwen3tts.wyoming`) as a real process on the tiny fixture, driven
by the `wyoming` client library and by `wyoming-bench` (both modes). Audio is checked against the
library (greedy, same built-in voice)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY, TINY_MODEL

pytest.importorskip("wyoming", reason="the wyoming package is not installed (pip install 'qwen3tts[wyoming]')")

from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice  # noqa: E402

MAX_NEW = 6
KW = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    vd = tmp_path_factory.mktemp("wyoming-voices")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "qwen3tts.wyoming", "--uri", f"tcp://127.0.0.1:{port}", "--model", str(TINY_MODEL),
                          "--voices-dir", str(vd), "--greedy", "--max-new-tokens", str(MAX_NEW)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stderr.read().decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield port, vd
    p.terminate()
    err = p.communicate(timeout=20)[1].decode()
    assert "Traceback" not in err, err  # disconnects and errors were handled, none escaped


@pytest.fixture(scope="module")
def lib():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


def pcm16(x) -> bytes:
    return (np.clip(x.numpy(), -1, 1) * 32767.0).round().astype("<i2").tobytes()


def lib_pcm(lib, text, voice="default") -> bytes:
    import torch

    return pcm16(torch.cat([c.audio for c in lib.stream(text, voice=voice, **KW)]))


async def read_until(client, *types, timeout=120):
    """Events until one of `types` (event type strings); returns them all."""
    out = []
    while True:
        ev = await asyncio.wait_for(client.read_event(), timeout)
        assert ev is not None, f"connection closed; got {[e.type for e in out]}"
        out.append(ev)
        if ev.type in types:
            return out


def audio_of(events) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))


def test_describe_lists_voices_and_streaming(server):
    port, vd = server

    async def go():
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(Describe().event())
            return Info.from_event((await read_until(c, "info"))[-1])

    info = asyncio.run(go())
    (prog,) = info.tts
    assert prog.name == "qwen3tts" and prog.installed and prog.supports_synthesize_streaming is True
    assert [v.name for v in prog.voices] == ["arctic-slt"]
    assert prog.voices[0].languages[0] == "en" and "zh" in prog.voices[0].languages


def test_synthesize_equals_library(server, lib):
    port, _ = server
    text = "Hello from the Wyoming server."

    async def go():
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(Synthesize(text).event())
            return await read_until(c, "audio-stop")

    events = asyncio.run(go())
    assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    chunks = [AudioChunk.from_event(e) for e in events[1:-1]]
    assert len(chunks) == MAX_NEW - 1 and all(len(c.audio) == 1920 * 2 for c in chunks)  # one 80 ms frame each
    assert [c.timestamp for c in chunks] == [80 * i for i in range(len(chunks))]
    got = audio_of(events)
    assert got == lib_pcm(lib, text)  # the built-in voice, byte for byte
    assert got != lib_pcm(lib, text, voice=None)  # and not the no-reference audio


def test_streaming_text_sentence_by_sentence(server, lib):
    """synthesize-start, text in pieces that cut sentences anywhere, a compatibility `synthesize`
    inside the stream (ignored), synthesize-stop: one audio cycle per sentence, then
    synthesize-stopped; the first sentence's audio arrives before the stream is closed."""
    port, _ = server

    async def go():
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="arctic-slt")).event())
            for piece in ["The first sen", "tence is here. The sec", "ond one"]:
                await c.write_event(SynthesizeChunk(piece).event())
            first = await read_until(c, "audio-stop")  # spoken before synthesize-stop
            await c.write_event(Synthesize("The first sentence is here. The second one").event())
            await c.write_event(SynthesizeChunk(" follows.").event())
            await c.write_event(SynthesizeStop().event())
            rest = await read_until(c, "synthesize-stopped")
            return first, rest

    first, rest = asyncio.run(go())
    assert first[0].type == "audio-start" and audio_of(first) == lib_pcm(lib, "The first sentence is here.")
    assert [e.type for e in rest if e.type != "audio-chunk"] == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert audio_of(rest) == lib_pcm(lib, "The second one follows.")


def test_errors_keep_the_connection(server, lib):
    port, _ = server

    async def go():
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(Synthesize("Hi there.", voice=SynthesizeVoice(name="nobody")).event())
            e1 = await read_until(c, "error")
            await c.write_event(Synthesize("   ").event())
            e2 = await read_until(c, "error")
            await c.write_event(SynthesizeChunk("no stream open").event())
            e3 = await read_until(c, "error")
            await c.write_event(Synthesize("Still here.", voice=SynthesizeVoice(language="en_US")).event())
            ok = await read_until(c, "audio-stop")
            return e1, e2, e3, ok

    e1, e2, e3, ok = asyncio.run(go())
    errs = [Error.from_event(e[-1]) for e in (e1, e2, e3)]
    assert [e.code for e in errs] == ["VOICE_NOT_FOUND", "INVALID_TEXT", "INVALID_MESSAGE"]
    assert "nobody" in errs[0].text and errs[1].text == "text is empty"
    import torch

    want = pcm16(torch.cat([c.audio for c in lib.stream("Still here.", language="English", voice="default", **KW)]))
    assert audio_of(ok) == want


def test_voice_added_to_the_store_is_listed_and_used(server, lib):
    from qwen3tts.voices import VoiceStore

    port, vd = server
    VoiceStore(vd).add(TINY / "reference.wav", voice_id="tiny-ref", name="Tiny")  # another process shares the folder

    async def go():
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(Describe().event())
            info = Info.from_event((await read_until(c, "info"))[-1])
            await c.write_event(Synthesize("With my voice.", voice=SynthesizeVoice(name="tiny-ref")).event())
            return info, await read_until(c, "audio-stop")

    info, events = asyncio.run(go())
    assert [v.name for v in info.tts[0].voices] == ["arctic-slt", "tiny-ref"]
    voice = lib.create_voice_prompt(TINY / "reference.wav", x_vector_only=True)
    assert audio_of(events) == lib_pcm(lib, "With my voice.", voice=voice)


def test_client_gone_mid_synthesis(server, lib):
    """A client that disconnects while its audio is being made (plain and streamed) leaves a
    working server: the next client gets its whole audio."""
    port, _ = server

    async def go():
        c = AsyncTcpClient("127.0.0.1", port)
        await c.connect()
        await c.write_event(Synthesize("Going away now.").event())
        await read_until(c, "audio-chunk")
        await c.disconnect()
        c = AsyncTcpClient("127.0.0.1", port)
        await c.connect()
        await c.write_event(SynthesizeStart().event())
        await c.write_event(SynthesizeChunk("Also going. Away.").event())
        await read_until(c, "audio-chunk")
        await c.disconnect()
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(Synthesize("Still here.").event())
            return await read_until(c, "audio-stop")

    assert audio_of(asyncio.run(go())) == lib_pcm(lib, "Still here.")


@pytest.mark.parametrize("mode", ["non_streaming", "streaming"])
def test_wyoming_bench(server, mode):
    pytest.importorskip("wyoming_bench", reason="wyoming-bench is not installed (pip install 'qwen3tts[wyoming]')")
    port, _ = server
    r = subprocess.run([sys.executable, "-c", "import sys; from wyoming_bench.cli import main; sys.exit(main())", "tts",
                        f"127.0.0.1:{port}", "--mode", mode, "--texts", "Hello there. This is a benchmark.", "--rounds", "2",
                        "--warmup", "0", "--timeout", "120"], capture_output=True, timeout=600)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert f"[{mode}] ok=2 fail=0" in out, out
