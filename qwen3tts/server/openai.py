"""OpenAI-compatible routes: `POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`,
on top of the server's engine and voice store (the request body of `audio.speech.create` in the
official `openai` SDK; `speech.audio.delta` / `speech.audio.done` events for
`stream_format: "sse"`). Protocol and I/O only: this module never imports torch.

Every field is validated before admission (a bad request fails alone, with a code); the request is
cancelled in the engine as soon as its client goes, before or after the response headers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from dataclasses import dataclass

from aiohttp import web

from ..voices import VoiceError
from . import formats
from .engine import Request
from .protocol import ProtocolError, check_text
from .session import encode_pcm

OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"}
MAX_INSTRUCTIONS = 4096
POLL_S = 0.2  # how often a request waiting for audio checks that its client is still connected
STATUS = {"INVALID_MESSAGE": 400, "INVALID_TEXT": 400, "UNSUPPORTED_FORMAT": 400, "VOICE_NOT_FOUND": 404, "UNAUTHORIZED": 401,
          "RATE_LIMITED": 429, "MODEL_LOADING": 503, "GPU_OUT_OF_MEMORY": 503, "CANCELLED": 503, "TIMEOUT": 504, "SYNTHESIS_ERROR": 500}


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@dataclass
class SpeechParams:
    text: str
    voice: str | None  # None: the server's default voice
    fmt: str
    sse: bool
    speed: float | None
    instructions: str | None
    language: str


def _finite_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError("number out of range")
    return v


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_speech(raw: bytes, max_chars: int) -> SpeechParams:
    """The body of `POST /v1/audio/speech` -> SpeechParams, or ProtocolError with its code."""
    try:
        body = json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
        raise ProtocolError("INVALID_MESSAGE", "body must be a JSON object (UTF-8, finite numbers, nesting within limits)") from None
    if not isinstance(body, dict):
        raise ProtocolError("INVALID_MESSAGE", "body must be a JSON object")

    def opt(key, types, what):
        v = body.get(key)
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            raise ProtocolError("INVALID_MESSAGE", f"'{key}' must be {what}")
        return v

    text = body.get("input")
    if not isinstance(text, str):
        raise ProtocolError("INVALID_TEXT", "'input' must be a non-empty string")
    text = check_text(text, max_chars, what="'input'")
    opt("model", str, "a string")
    voice = body.get("voice")
    if isinstance(voice, dict):  # the SDK's custom voice reference: {"id": "..."}
        voice = voice.get("id")
        if not isinstance(voice, str):
            raise ProtocolError("INVALID_MESSAGE", "'voice' must be a string or {\"id\": \"...\"}")
    elif voice is not None and not isinstance(voice, str):
        raise ProtocolError("INVALID_MESSAGE", "'voice' must be a string or {\"id\": \"...\"}")
    if voice is not None and ("\x00" in voice or len(voice) > 256):
        raise ProtocolError("INVALID_MESSAGE", "'voice' must be a voice id (at most 256 characters, no NUL)")
    if voice is not None and (not voice or voice == "default" or voice.lower() in OPENAI_VOICES):
        voice = None  # OpenAI's built-in names map to the server's default voice
    fmt = opt("response_format", str, "a string")
    fmt = "mp3" if fmt is None else fmt.lower()
    if fmt not in formats.SUPPORTED:
        raise ProtocolError("UNSUPPORTED_FORMAT", f"response_format must be one of {', '.join(formats.SUPPORTED)} (24 kHz mono)"
                            + ("; aac would need ffmpeg, which this server does not use" if fmt == "aac" else ""))
    stream_format = opt("stream_format", str, "a string")
    if stream_format not in (None, "audio", "sse"):
        raise ProtocolError("INVALID_MESSAGE", "stream_format must be 'audio' or 'sse'")
    speed = opt("speed", (int, float), "a number")
    if speed is not None and not 0.25 <= speed <= 4.0:
        raise ProtocolError("INVALID_MESSAGE", "'speed' must be between 0.25 and 4.0")
    instructions = opt("instructions", str, "a string")
    if instructions is not None:
        instructions = check_text(instructions, MAX_INSTRUCTIONS, what="'instructions'") if instructions.strip() else None
    language = opt("language", str, "a string")
    if language is not None and (len(language) > 64 or not language.strip()):
        raise ProtocolError("UNSUPPORTED_FORMAT", "'language' must be a language name")
    return SpeechParams(text, voice, fmt, stream_format == "sse", speed, instructions, (language or "auto").strip())


class ClientGone(ConnectionResetError):
    """The client closed the connection (aiohttp ignores a handler's ConnectionError quietly)."""


def _gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


class _Events:
    """The engine's deliveries for one request; raises ClientGone as soon as the client has gone,
    whether or not the response headers were sent."""

    def __init__(self, inbox: asyncio.Queue, request: web.Request):
        self.inbox, self.request, self._get = inbox, request, None

    async def next(self):
        if self._get is None:
            self._get = asyncio.ensure_future(self.inbox.get())
        while True:
            done, _ = await asyncio.wait({self._get}, timeout=POLL_S)
            if done:
                item, self._get = self._get.result(), None
                return item
            if _gone(self.request):
                raise ClientGone()

    def close(self):
        if self._get is not None:
            self._get.cancel()


class OpenAIRoutes:
    """The OpenAI-compatible handlers of one `SpeakServer`."""

    def __init__(self, server):
        self.server = server

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/audio/speech", self.openai_speech)
        router.add_get("/v1/audio/voices", self.openai_voices)
        router.add_get("/v1/models", self.openai_models)

    async def openai_voices(self, request):
        voices, _ = await asyncio.get_running_loop().run_in_executor(None, self.server.voices.list)
        return web.json_response({"voices": [{"id": v.id, "name": v.name} for v in voices]})

    async def openai_models(self, request):
        model = {"id": self.server.engine.model_name, "object": "model", "created": 0, "owned_by": "qwen3tts"}
        return web.json_response({"object": "list", "data": [model]})

    async def openai_speech(self, request: web.Request):
        srv = self.server
        if not srv._http_authed(request):
            return json_error(401, "UNAUTHORIZED", "a valid bearer token is required")
        try:
            p = parse_speech(await request.read(), srv.cfg.max_chars)
        except ProtocolError as e:
            return json_error(STATUS[e.code], e.code, e.message)
        if p.voice is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, srv.voices.get, p.voice)
            except VoiceError as e:
                return json_error(404, "VOICE_NOT_FOUND", e.message)
        srv.engine.ensure_loading()
        while srv.engine.status == "loading":
            if _gone(request):
                raise ClientGone()
            await asyncio.sleep(0.1)
        if srv.engine.status != "loaded":
            return json_error(503, "MODEL_LOADING", f"the model could not be loaded: {srv.engine.load_error}")
        languages = {x.lower(): x for x in srv.engine.languages}
        if p.language.lower() not in languages:
            return json_error(400, "UNSUPPORTED_FORMAT", f"'language' must be one of {', '.join(srv.engine.languages)}")
        headers = {"X-Sample-Rate": str(formats.RATE), "X-Audio-Format": p.fmt}
        if p.speed not in (None, 1, 1.0):
            headers["X-Speed-Ignored"] = "speed is not supported by Qwen3-TTS and was ignored"
        instruct = p.instructions if p.instructions and srv.engine.takes_instructions else None
        if p.instructions and instruct is None:
            headers["X-Instructions-Ignored"] = "this checkpoint takes no instructions (VoiceDesign / CustomVoice 1.7B do); ignored"
        inbox: asyncio.Queue = asyncio.Queue()
        req = Request(text=p.text, voice_id=p.voice, language=languages[p.language.lower()], loop=asyncio.get_running_loop(),
                      deliver=inbox.put_nowait, instruct=instruct)
        srv.metrics.request()
        srv.engine.submit(req)
        events = _Events(inbox, request)
        try:
            return await self._respond(request, req, events, p, headers)
        finally:
            req.cancelled.set()  # a no-op once the request is done; otherwise the engine drops it at the next frame
            events.close()

    async def _respond(self, request: web.Request, req: Request, events: _Events, p: SpeechParams, headers: dict):
        srv = self.server
        first = await events.next()
        if first[0] == "error":
            srv.metrics.error(first[1])
            return json_error(STATUS.get(first[1], 500), first[1], first[2])
        if first[0] == "cancelled":
            return json_error(503, "CANCELLED", "the request was cancelled")
        enc = formats.encoder(p.fmt)
        t0, samples, ev, out = time.monotonic(), 0, first, bytearray()
        resp: web.StreamResponse | None = None
        if p.sse or enc.streams:
            ctype = "text/event-stream" if p.sse else enc.content_type
            resp = web.StreamResponse(status=200, headers={**headers, "Content-Type": ctype, "Cache-Control": "no-cache"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)

        async def emit(data: bytes):
            if not data:
                return
            if resp is None:
                out.extend(data)
            elif p.sse:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")}
                await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            else:
                await resp.write(data)

        error = None
        while True:
            if ev[0] == "audio":
                req.consumed()
                await emit(enc.write(encode_pcm(ev[1], "pcm16")))
                samples += ev[1].size
            elif ev[0] == "error":
                error = ev
                srv.metrics.error(ev[1])
                break
            else:  # done (or cancelled)
                break
            ev = await events.next()
        if samples:
            srv.metrics.complete(None, (time.monotonic() - t0) / (samples / formats.RATE), samples / formats.RATE)
        if resp is None:  # a buffered format: nothing is sent yet, so an error still gets its status
            if error is not None:
                return json_error(STATUS.get(error[1], 500), error[1], error[2])
            body = bytes(out) + enc.finish()
            return web.Response(body=body, headers={**headers, "Content-Type": enc.content_type})
        if error is None:
            await emit(enc.finish())
        if p.sse:
            if error is not None:
                last = {"type": "error", "error": {"code": error[1], "message": error[2]}}
            else:
                frames = ev[1].get("frames", 0) if ev[0] == "done" else 0
                last = {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": frames, "total_tokens": frames}}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        await resp.write_eof()  # after an error without SSE the body just ends early: the headers are gone
        return resp
