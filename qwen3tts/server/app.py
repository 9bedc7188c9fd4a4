"""The aiohttp application: `/api/v1/speak` (WebSocket), the voices API, `/healthz`, `/metrics`,
the `/speak` page, and an OpenAI-compatible `/v1/audio/speech`. Protocol and I/O only: the model
lives behind `Engine`; this module never imports torch.
"""

from __future__ import annotations

import asyncio
import hmac
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..voices import VoiceError, VoiceStore
from .engine import Engine, Request
from .metrics import Metrics
from .session import Session, encode_pcm

SERVER_KEY = web.AppKey("server", object)
STATIC = Path(__file__).resolve().parent / "static"
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}


@dataclass
class ServerConfig:
    model: str | None = None
    voices_dir: str = "voices"
    default_voice: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    preload: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    quantize: str = "none"  # a key of config.QUANTIZE_MODES
    auth_token: str | None = None
    max_sessions: int = 16
    max_queue: int = 16
    max_chars: int = 5000
    idle_timeout: float = 300.0
    request_timeout: float = 300.0
    text_timeout: float = 30.0  # a streamed request with no text for this long ends with TIMEOUT (0: never)
    max_upload_mb: float = 10.0
    greedy: bool = False
    max_new_tokens: int | None = None
    frames_per_chunk: int = 1


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class SpeakServer:
    def __init__(self, cfg: ServerConfig, engine: Engine | None = None):
        self.cfg = cfg
        self.metrics = Metrics()
        self.voices = engine.voices if engine is not None and engine.voices is not None else VoiceStore(cfg.voices_dir, default_id=cfg.default_voice)
        self._own_engine = engine is None
        self.engine = engine or Engine(cfg.model, cfg.device, cfg.dtype, self.voices, quantize=cfg.quantize, greedy=cfg.greedy, max_new_tokens=cfg.max_new_tokens,
                                       frames_per_chunk=cfg.frames_per_chunk, request_timeout=cfg.request_timeout)
        self.sessions: set[Session] = set()
        self.app = web.Application(client_max_size=int(cfg.max_upload_mb * 2**20) + 65536)
        self.app[SERVER_KEY] = self
        r = self.app.router
        r.add_get("/api/v1/speak", self.ws_speak)
        r.add_get("/api/v1/voices", self.voices_list)
        r.add_post("/api/v1/voices", self.voices_add)
        r.add_delete("/api/v1/voices/{voice_id}", self.voices_delete)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics_page)
        r.add_get("/", self.index)
        r.add_get("/speak", self.page)
        r.add_static("/static", STATIC)
        r.add_post("/v1/audio/speech", self.openai_speech)
        r.add_get("/v1/audio/voices", self.openai_voices)
        self.app.on_startup.append(self._startup)
        self.app.on_shutdown.append(self._shutdown)

    async def _startup(self, app):
        if self.cfg.preload:
            self.engine.ensure_loading()

    async def _shutdown(self, app):
        for s in list(self.sessions):
            s._cancel_all(notify=False)
            await s.send({"type": "stopped", "reason": "server_shutdown"})
            await s.close(1001, "server shutting down")
        if self._own_engine:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.shutdown)

    # ------------------------------------------------------------------ auth
    def _http_authed(self, request: web.Request) -> bool:
        if not self.cfg.auth_token:
            return True
        h = request.headers.get("Authorization", "")
        token = h[7:] if h.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(token.encode(), self.cfg.auth_token.encode())

    # ------------------------------------------------------------------ websocket
    async def ws_speak(self, request: web.Request):
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        if len(self.sessions) >= self.cfg.max_sessions:
            self.metrics.error("RATE_LIMITED")
            await ws.send_json({"type": "error", "id": None, "code": "RATE_LIMITED",
                                "message": f"too many open sessions (max {self.cfg.max_sessions})", "recoverable": True})
            await ws.close(code=1013, message=b"too many sessions")
            return ws
        s = Session(self, ws, pre_authed=bool(self.cfg.auth_token) and self._http_authed(request))
        self.sessions.add(s)
        try:
            await s.run()
        except Exception:  # noqa: BLE001 - a session's failure must never take the server down
            import traceback

            traceback.print_exc()
        finally:
            self.sessions.discard(s)
            if not ws.closed:
                await ws.close()
        return ws

    # ------------------------------------------------------------------ voices API
    async def voices_list(self, request):
        voices, broken = await asyncio.get_running_loop().run_in_executor(None, self.voices.list)
        return web.json_response({"voices": [v.public() for v in voices], "unavailable": broken})

    async def voices_add(self, request: web.Request):
        if not self._http_authed(request):
            return _json_error(401, "UNAUTHORIZED", "a valid bearer token is required")
        limit = int(self.cfg.max_upload_mb * 2**20)
        if request.content_length and request.content_length > limit + 65536:
            return _json_error(413, "TOO_LARGE", f"upload over the {self.cfg.max_upload_mb:g} MB limit")
        if not request.content_type.startswith("multipart/"):
            return _json_error(400, "BAD_REQUEST", "send multipart/form-data with an 'audio' file")
        fields, audio = {}, None
        try:
            reader = await request.multipart()
            async for part in reader:
                if part.name == "audio":
                    buf = bytearray()
                    while chunk := await part.read_chunk(65536):
                        buf += chunk
                        if len(buf) > limit:
                            return _json_error(413, "TOO_LARGE", f"audio over the {self.cfg.max_upload_mb:g} MB limit")
                    audio = bytes(buf)
                elif part.name in ("transcript", "name", "id", "language", "mode", "description"):
                    fields[part.name] = (await part.text())[:10000]
        except web.HTTPRequestEntityTooLarge:
            return _json_error(413, "TOO_LARGE", f"upload over the {self.cfg.max_upload_mb:g} MB limit")
        except (ValueError, AssertionError, UnicodeDecodeError) as e:
            return _json_error(400, "BAD_REQUEST", f"malformed multipart body ({e})")
        if not audio:
            return _json_error(400, "BAD_AUDIO", "missing 'audio' file")
        try:
            info = await asyncio.get_running_loop().run_in_executor(None, lambda: self.voices.add(
                audio, transcript=fields.get("transcript", ""), name=fields.get("name"), voice_id=fields.get("id") or None,
                language=fields.get("language", "auto"), description=fields.get("description", ""), mode=fields.get("mode") or None))
        except VoiceError as e:
            return _json_error(e.status, e.code, e.message)
        return web.json_response({"voice": info.public()}, status=201)

    async def voices_delete(self, request):
        if not self._http_authed(request):
            return _json_error(401, "UNAUTHORIZED", "a valid bearer token is required")
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.voices.remove, request.match_info["voice_id"])
        except VoiceError as e:
            return _json_error(e.status if e.code != "BAD_ID" else 404, e.code, e.message)
        return web.Response(status=204)

    # ------------------------------------------------------------------ misc
    async def healthz(self, request):
        st = self.engine.status
        body = {"status": "ok", "model": {"loaded": "loaded", "loading": "loading"}.get(st, "not_loaded")}
        if st == "failed":
            body["error"] = self.engine.load_error
        return web.json_response(body)

    async def metrics_page(self, request):
        return web.Response(text=self.metrics.render(len(self.sessions), self.engine.queue_depth(), self.engine.status),
                            content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})

    async def index(self, request):
        raise web.HTTPFound("/speak")

    async def page(self, request):
        return web.FileResponse(STATIC / "speak.html")

    # ------------------------------------------------------------------ OpenAI-compatible
    async def openai_voices(self, request):
        voices, _ = await asyncio.get_running_loop().run_in_executor(None, self.voices.list)
        return web.json_response({"voices": [{"id": v.id, "name": v.name} for v in voices]})

    async def openai_speech(self, request: web.Request):
        if not self._http_authed(request):
            return _json_error(401, "UNAUTHORIZED", "a valid bearer token is required")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json_error(400, "INVALID_MESSAGE", "body must be JSON")
        if not isinstance(body, dict):
            return _json_error(400, "INVALID_MESSAGE", "body must be a JSON object")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return _json_error(400, "INVALID_TEXT", "'input' must be a non-empty string")
        if len(text.strip()) > self.cfg.max_chars:
            return _json_error(400, "INVALID_TEXT", f"'input' is longer than {self.cfg.max_chars} characters")
        fmt = body.get("response_format", "wav")
        if fmt not in ("wav", "pcm"):
            return _json_error(400, "UNSUPPORTED_FORMAT", "response_format must be 'wav' or 'pcm' (24 kHz mono 16-bit)")
        voice = body.get("voice")
        if voice is not None and not isinstance(voice, str):
            return _json_error(400, "INVALID_MESSAGE", "'voice' must be a string")
        voice_id = None
        if voice and voice != "default" and voice.lower() not in OPENAI_VOICES:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.voices.get, voice)
            except VoiceError as e:
                return _json_error(404, "VOICE_NOT_FOUND", e.message)
            voice_id = voice
        headers = {"Content-Type": "audio/wav" if fmt == "wav" else "audio/pcm", "X-Sample-Rate": "24000"}
        if body.get("speed") not in (None, 1, 1.0):
            headers["X-Speed-Ignored"] = "speed is not supported by Qwen3-TTS and was ignored"
        self.engine.ensure_loading()
        while self.engine.status == "loading":
            await asyncio.sleep(0.1)
        if self.engine.status != "loaded":
            return _json_error(503, "MODEL_LOADING", f"the model could not be loaded: {self.engine.load_error}")
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        language = body.get("language", "auto") if isinstance(body.get("language"), str) else "auto"
        req = Request(text=text.strip(), voice_id=voice_id, language=language, loop=loop, deliver=inbox.put_nowait)
        self.metrics.request()
        self.engine.submit(req)
        first = await inbox.get()
        if first[0] == "error":
            self.metrics.error(first[1])
            return _json_error(400 if first[1] in ("UNSUPPORTED_FORMAT", "INVALID_TEXT", "VOICE_NOT_FOUND") else 500, first[1], first[2])
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
                    self.metrics.error(ev[1])
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
                self.metrics.complete(None, (time.monotonic() - t0) / (samples / 24000), samples / 24000)
        return resp


def _wav_header_streaming(rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as streaming servers do)."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def create_app(cfg: ServerConfig, engine: Engine | None = None) -> web.Application:
    return SpeakServer(cfg, engine).app

