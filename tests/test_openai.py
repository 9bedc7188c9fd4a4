"""The OpenAI-compatible route through the official `openai` SDK against a real server on loopback
(tiny model, greedy): every response_format decodes with the right rate and length, the default is
mp3, SSE deltas carry the pcm bytes, /v1/models, instructions; a client that goes away (before or
after the response headers) cancels its request in the engine at once; malformed bodies get 400
with a code."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import struct
import time
import urllib.request

import numpy as np
import openai
import pytest
import soundfile as sf

from conftest import TINY_MODEL
from server_util import ServerThread
from qwen3tts.server.app import ServerConfig
from qwen3tts.server.engine import Engine
from qwen3tts.voices import VoiceStore

TEXT = "Hello there, how are you today?"
MAX_NEW = 16


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path_factory.mktemp("voices")), greedy=True, max_new_tokens=MAX_NEW)
    s = ServerThread(ServerConfig(), eng)
    yield s
    s.stop()
    eng.shutdown()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


def speech(client, **kw):
    r = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, **kw)
    return r.content, r.response.headers


def test_every_format_decodes_with_the_pcm_length(client):
    pcm, h = speech(client, response_format="pcm")
    assert h["Content-Type"] == "audio/pcm" and h["X-Sample-Rate"] == "24000"
    ref = np.frombuffer(pcm, dtype="<i2")
    assert ref.size == (MAX_NEW - 1) * 1920  # 15 frames of 80 ms
    want = {"wav": ("WAV", "audio/wav"), "flac": ("FLAC", "audio/flac"), "mp3": ("MP3", "audio/mpeg"), "opus": ("OGG", "audio/ogg")}
    for fmt, (major, ctype) in want.items():
        body, h = speech(client, response_format=fmt)
        assert h["Content-Type"] == ctype, fmt
        info = sf.info(io.BytesIO(body))
        audio, rate = sf.read(io.BytesIO(body), dtype="int16")
        assert info.format == major and rate == 24000 and info.channels == 1, fmt
        assert audio.shape == ref.shape, fmt
        if fmt in ("wav", "flac"):  # lossless: the very samples of the pcm response
            assert np.array_equal(audio, ref), fmt
        else:  # lossy: the same sound, not the same samples
            corr = np.corrcoef(audio.astype(float), ref.astype(float))[0, 1]
            assert corr > 0.5, (fmt, corr)
    # pcm, wav and opus stream (chunked); mp3 and flac are sent whole, with their length
    assert "Content-Length" not in speech(client, response_format="opus")[1]
    assert int(speech(client, response_format="flac")[1]["Content-Length"]) > 0


def test_default_format_is_mp3(client):
    body, h = speech(client)
    assert h["Content-Type"] == "audio/mpeg" and sf.info(io.BytesIO(body)).format == "MP3"


def test_sse_deltas_equal_the_pcm_response(client):
    pcm, _ = speech(client, response_format="pcm")
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm",
                                                            stream_format="sse") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) > 2
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == pcm
    done = events[-1]
    assert done["type"] == "speech.audio.done" and done["usage"]["output_tokens"] == MAX_NEW - 1
    # other formats: the deltas put together are that format's file
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav",
                                                            stream_format="sse") as r:
        wav = b"".join(base64.b64decode(json.loads(line[6:])["audio"]) for line in r.iter_lines()
                       if line.startswith("data: ") and '"speech.audio.delta"' in line)
    assert wav[:4] == b"RIFF" and wav[44:] == pcm


def test_models_list(client, srv):
    ids = [m.id for m in client.models.list()]
    assert ids == [srv.server.engine.model_name] and ids[0] == "model"  # the fixture's folder name


def test_aac_is_refused_naming_the_formats(client):
    with pytest.raises(openai.BadRequestError) as e:
        speech(client, response_format="aac")
    assert e.value.status_code == 400
    err = e.value.body if "code" in e.value.body else e.value.body["error"]
    assert err["code"] == "UNSUPPORTED_FORMAT" and "mp3, opus, flac, wav, pcm" in err["message"] and "ffmpeg" in err["message"]


def test_instructions_on_a_base_checkpoint_are_accepted_and_flagged(client):
    pcm, _ = speech(client, response_format="pcm")
    body, h = speech(client, response_format="pcm", instructions="Speak slowly and warmly.")
    assert body == pcm and "X-Instructions-Ignored" in h
    assert "X-Instructions-Ignored" not in speech(client, response_format="pcm")[1]


# ---------------------------------------------------------------------------- malformed bodies


def post(srv, body: bytes, ctype="application/json"):
    req = urllib.request.Request(srv.url + "/v1/audio/speech", data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("body,code", [
    (b"[" * 100_000, "INVALID_MESSAGE"),
    (b'{"input": "hi", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "INVALID_MESSAGE"),
    (b"[1, 2]", "INVALID_MESSAGE"),
    (b'"hi"', "INVALID_MESSAGE"),
    (b"\xff\xfe{}", "INVALID_MESSAGE"),
    (b'{"input": 5}', "INVALID_TEXT"),
    (b'{"input": "hi", "speed": NaN}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "speed": Infinity}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "speed": 1e999}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "speed": "fast"}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "speed": 10}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "seedless": 1' + b"0" * 5000 + b"}", "INVALID_MESSAGE"),
    (b'{"input": "hi", "voice": 3}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "voice": {"id": 3}}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "response_format": ["mp3"]}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "response_format": "ogg"}', "UNSUPPORTED_FORMAT"),
    (b'{"input": "hi", "stream_format": "ws"}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "instructions": 7}', "INVALID_MESSAGE"),
    (b'{"input": "hi", "language": "Klingon"}', "UNSUPPORTED_FORMAT"),
    (b'{"input": "hi\\u0000there"}', "INVALID_TEXT"),
    (b'{"input": "hi \\ud800 there"}', "INVALID_TEXT"),
    (b'{"input": "   "}', "INVALID_TEXT"),
])
def test_malformed_bodies_get_400_with_a_code(srv, body, code):
    status, out = post(srv, body)
    assert status == 400 and json.loads(out)["error"]["code"] == code
    assert post(srv, b'{"input": "Still fine.", "response_format": "pcm"}')[0] == 200


def test_nul_rule_is_the_websocket_rule():
    from qwen3tts.server import protocol as P
    from qwen3tts.server.openai import parse_speech

    for text in ("a\x00b", "a\ud800b"):
        with pytest.raises(P.ProtocolError) as ws:
            P.parse(json.dumps({"type": "speak", "text": text}), P.Limits())
        with pytest.raises(P.ProtocolError) as http:
            parse_speech(json.dumps({"input": text}).encode(), 5000)
        assert ws.value.code == http.value.code == "INVALID_TEXT"


# ---------------------------------------------------------------------------- cancellation


@pytest.fixture(scope="module")
def long_srv(tmp_path_factory):
    """A server whose requests would run for a long time: no token budget to speak of, each frame
    slowed down so the first audio (and so the response headers) comes late."""
    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path_factory.mktemp("v2")), greedy=True, max_new_tokens=100_000)
    s = ServerThread(ServerConfig(max_chars=200), eng)
    eng.ensure_loading()
    while eng.status == "loading":
        time.sleep(0.05)
    gen = eng.tts.generator
    orig = gen.next_frames

    def slow(states):
        time.sleep(0.1 if any(st.frames > 0 for st in states) else 1.5)  # the first frame is the slow one
        return orig(states)

    gen.next_frames = slow
    yield s
    del gen.next_frames
    s.stop()
    eng.shutdown()


def queue_depth(srv) -> int:
    with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
        return int(re.search(r"^qwen3tts_queue_depth (\d+)", r.read().decode(), re.M).group(1))


def raw_request(srv, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", srv.cfg.port))
    s.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


LONG = ("A long story that would go on and on, through the night and into the morning, with many turns, "
        "and many more words than anyone would care to hear in one sitting, until the very end.")  # ~300 frames at most


def wait_depth(srv, want: int, within: float) -> int:
    end = time.monotonic() + within
    while (d := queue_depth(srv)) != want and time.monotonic() < end:
        time.sleep(0.05)
    return d


@pytest.mark.parametrize("fmt,reset,when", [("pcm", False, "before"), ("pcm", True, "before"), ("mp3", False, "before"),
                                             ("pcm", True, "after"), ("wav", False, "after"), ("mp3", True, "after")])
def test_client_gone_cancels_the_request(long_srv, fmt, reset, when):
    """Before: the socket closes (FIN, or RST with SO_LINGER 0) while the first frame is still being
    made, so before the response headers. After: once audio flows (for mp3, buffered, the headers
    never come, but frames are being made). Either way the engine drops the request at once,
    not after --request-timeout (300 s)."""
    assert wait_depth(long_srv, 0, 30) == 0
    s = raw_request(long_srv, {"input": LONG, "response_format": fmt})
    assert wait_depth(long_srv, 1, 30) == 1
    time.sleep(0.3)  # past the moment between the engine's inbox and its active list (depth 0 for an instant)
    assert queue_depth(long_srv) == 1  # admitted and generating
    if when == "after":
        time.sleep(2.0)  # the first frame is out: headers sent (pcm/wav), frames flowing
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    assert wait_depth(long_srv, 0, 10) == 0  # well below the 300 s request timeout


def test_instructions_reach_a_voice_design_checkpoint(tmp_path):
    """The tiny model relabelled VoiceDesign: `instructions` go to the model (the audio equals the
    library's stream with that `instruct`, and differs from the one without)."""
    import shutil

    import torch

    from qwen3tts import Qwen3TTS

    model = tmp_path / "vd"
    shutil.copytree(TINY_MODEL, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["tts_model_type"] = "voice_design"
    (model / "config.json").write_text(json.dumps(cfg))
    eng = Engine(str(model), voices=VoiceStore(tmp_path / "voices"), greedy=True, max_new_tokens=8)
    s = ServerThread(ServerConfig(), eng)
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        said = "A calm, deep voice."
        with_instr, h = speech(client, response_format="pcm", instructions=said, extra_body={"language": "English"})
        without, _ = speech(client, response_format="pcm", extra_body={"language": "English"})
    finally:
        s.stop()
        eng.shutdown()
    assert "X-Instructions-Ignored" not in h
    lib = Qwen3TTS.from_pretrained(model)
    kw = dict(language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=8)
    want = torch.cat([c.audio for c in lib.stream(TEXT, instruct=said, **kw)])
    assert with_instr == (np.clip(want.numpy(), -1, 1) * 32767.0).round().astype("<i2").tobytes()
    assert with_instr != without
