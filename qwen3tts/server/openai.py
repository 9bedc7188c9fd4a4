"""OpenAI-compatible routes: `POST /v1/audio/speech` and `GET /v1/audio/voices`, on top of the
server's engine and voice store. Protocol and I/O only: this module never imports torch.
"""

from __future__ import annotations

import asyncio
import struct
import time

from aiohttp import web

from ..voices import VoiceError
from .engine import Request
from .session import encode_pcm

OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class OpenAIRoutes:
    """The OpenAI-compatible handlers of one `SpeakServer`."""

    def __init__(self, server):
        self.server = server

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/audio/speech", self.openai_speech)
        router.add_get("/v1/audio/voices", self.openai_voices)

    async def openai_voices(self, request):
        voices, _ = await asyncio.get_running_loop().run_in_executor(None, self.server.voices.list)
        return web.json_response({"voices": [{"id": v.id, "name": v.name} for v in voices]})

    async def openai_speech(self, request: web.Request):
        if not self.server._http_authed(request):
            return json_error(401, "UNAUTHORIZED", "a valid bearer token is required")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return json_error(400, "INVALID_MESSAGE", "body must be JSON")
        if not isinstance(body, dict):
            return json_error(400, "INVALID_MESSAGE", "body must be a JSON object")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return json_error(400, "INVALID_TEXT", "'input' must be a non-empty string")
        if len(text.strip()) > self.server.cfg.max_chars:
            return json_error(400, "INVALID_TEXT", f"'input' is longer than {self.server.cfg.max_chars} characters")
        fmt = body.get("response_format", "wav")
        if fmt not in ("wav", "pcm"):
            return json_error(400, "UNSUPPORTED_FORMAT", "response_format must be 'wav' or 'pcm' (24 kHz mono 16-bit)")
        voice = body.get("voice")
        if voice is not None and not isinstance(voice, str):
            return json_error(400, "INVALID_MESSAGE", "'voice' must be a string")
        voice_id = None
        if voice and voice != "default" and voice.lower() not in OPENAI_VOICES:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.server.voices.get, voice)
            except VoiceError as e:
                return json_error(404, "VOICE_NOT_FOUND", e.message)
            voice_id = voice
        headers = {"Content-Type": "audio/wav" if fmt == "wav" else "audio/pcm", "X-Sample-Rate": "24000"}
        if body.get("speed") not in (None, 1, 1.0):
            headers["X-Speed-Ignored"] = "speed is not supported by Qwen3-TTS and was ignored"
        self.server.engine.ensure_loading()
        while self.server.engine.status == "loading":
            await asyncio.sleep(0.1)
        if self.server.engine.status != "loaded":
            return json_error(503, "MODEL_LOADING", f"the model could not be loaded: {self.server.engine.load_error}")
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        language = body.get("language", "auto") if isinstance(body.get("language"), str) else "auto"
        req = Request(text=text.strip(), voice_id=voice_id, language=language, loop=loop, deliver=inbox.put_nowait)
        self.server.metrics.request()
        self.server.engine.submit(req)
        first = await inbox.get()
        if first[0] == "error":
            self.server.metrics.error(first[1])
            return json_error(400 if first[1] in ("UNSUPPORTED_FORMAT", "INVALID_TEXT", "VOICE_NOT_FOUND") else 500, first[1], first[2])
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        t0, samples = time.monotonic(), 0
        try:
            if fmt == "wav":
                await resp.write(_wav_header_streaming(24000))
            ev = first
            while True:
                if ev[0] == "audio":
                    req.consumed()
                    await resp.write(encode_pcm(ev[1], "pcm16"))
                    samples += ev[1].size
                elif ev[0] == "error":
                    self.server.metrics.error(ev[1])
                    break  # headers are gone: the body just ends early
                else:
                    break
                ev = await inbox.get()
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            req.cancelled.set()
            raise
        finally:
            if samples:
                self.server.metrics.complete(None, (time.monotonic() - t0) / (samples / 24000), samples / 24000)
        return resp


def _wav_header_streaming(rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as streaming servers do)."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))
