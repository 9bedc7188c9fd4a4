"""The aiohttp application: `/api/v1/speak` (WebSocket), the voices API, `/healthz`, `/metrics`,
the `/speak` page; the OpenAI-compatible routes live in `openai.py`. Protocol and I/O only: the model
lives behind `Engine`; this module never imports torch.

Every route passes the Origin / Host policy (`access.py`); synthesis, on the WebSocket and over
HTTP, takes a slot of the shared `Admission` (`--max-sessions`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSCloseCode, web

from ..builtin_voice import VoiceStoreWithBuiltin
from ..settings import default_voices_dir
from ..voices import VoiceError, config_languages
from . import protocol as P
from .access import AccessPolicy, token_ok
from .admission import HTTP_SYNTHESIS, RETRY_AFTER_S, Admission
from .engine import Engine
from .forms import FormError, read_voice_form
from .lifecycle import Lifecycle
from .metrics import Metrics
from .openai import OpenAIRoutes
from .session import Session

SERVER_KEY = web.AppKey("server", object)
STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ServerConfig:
    model: str | None = None
    voices_dir: str = field(default_factory=lambda: str(default_voices_dir()))  # the CLI's store too
    default_voice: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    preload: bool = False
    device: str = "cpu"
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 elsewhere
    quantize: str = "none"  # a key of config.QUANTIZE_MODES
    cuda_graphs: str = "auto"  # auto | on | off: the fixed-shape frame step (captured on CUDA)
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
    drain_seconds: float = 30.0
    allowed_origins: str | None = None  # comma list of foreign origins browsers may use the server from; "*": any
    allowed_hosts: str | None = None  # comma list of Host names accepted on a loopback bind besides loopback ones; "*": any
    auth_timeout: float = 5.0  # seconds an unauthenticated WebSocket has to send a valid token


def _json_error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": P.redact(message)}}, status=status, headers=headers)


class _SpeakSocket(web.WebSocketResponse):
    """A frame over the transport limit makes aiohttp close with 1009 at once; the client gets
    `error{INVALID_MESSAGE}` first."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            try:
                await self.send_json(P.error("INVALID_MESSAGE", f"message too large (over {P.MAX_FRAME_BYTES} bytes)"))
            except (ConnectionError, RuntimeError):
                pass
        return await super().close(code=code, message=message, drain=drain)


class SpeakServer:
    def __init__(self, cfg: ServerConfig, engine: Engine | None = None):
        self.cfg = cfg
        self.metrics = Metrics()
        self.voices = engine.voices if engine is not None and engine.voices is not None else VoiceStoreWithBuiltin(cfg.voices_dir, default_id=cfg.default_voice)
        self._own_engine = engine is None
        self.engine = engine or Engine(cfg.model, cfg.device, cfg.dtype, self.voices, quantize=cfg.quantize, greedy=cfg.greedy, max_new_tokens=cfg.max_new_tokens,
                                       frames_per_chunk=cfg.frames_per_chunk, request_timeout=cfg.request_timeout,
                                       cuda_graphs=cfg.cuda_graphs)
        self.sessions: set[Session] = set()
        self.admission = Admission(cfg.max_sessions)
        self.unauthenticated = 0  # open sockets still waiting for a token (not holding a slot)
        self.access = AccessPolicy(cfg.host, cfg.allowed_origins, cfg.allowed_hosts)
        self.app = web.Application(client_max_size=int(cfg.max_upload_mb * 2**20) + 65536,
                                   middlewares=[self.access.middleware, self._admit_http])
        self.app.on_response_prepare.append(self.access.on_prepare)
        self.app[SERVER_KEY] = self
        r = self.app.router
        r.add_get("/api/v1/speak", self.ws_speak)
        r.add_get("/api/v1/voices", self.voices_list)
        r.add_post("/api/v1/voices", self.voices_add)
        r.add_put("/api/v1/voices/{voice_id}", self.voices_add)  # create or replace that id
        r.add_delete("/api/v1/voices/{voice_id}", self.voices_delete)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics_page)
        r.add_get("/", self.index)
        r.add_get("/speak", self.page)
        r.add_static("/static", STATIC)
        OpenAIRoutes(self).register(r)
        self.app.on_startup.append(self._startup)
        self.app.on_shutdown.append(self._shutdown)
        self.lifecycle = Lifecycle(self, cfg.drain_seconds)  # /readyz, drain on SIGTERM, load gauges
        self.lifecycle.install(self.app)

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

    # ------------------------------------------------------------------ auth, admission
    def _http_authed(self, request: web.Request) -> bool:
        if not self.cfg.auth_token:
            return True
        scheme, _, cred = request.headers.get("Authorization", "").strip().partition(" ")
        token = cred.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
        return token_ok(token, self.cfg.auth_token)

    @web.middleware
    async def _admit_http(self, request: web.Request, handler):
        """HTTP synthesis holds one admission slot while it runs (429 + Retry-After when none is free)."""
        if (request.method, request.path) not in HTTP_SYNTHESIS or not self._http_authed(request):
            return await handler(request)  # (an unauthorized request gets its 401 from the handler)
        if not self.admission.try_acquire():
            self.metrics.error("RATE_LIMITED")
            return _json_error(429, "RATE_LIMITED", f"the server is busy (max {self.cfg.max_sessions} sessions and requests at once); retry later",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            return await handler(request)
        finally:
            self.admission.release()

    def too_many_sessions(self) -> dict:
        self.metrics.error("RATE_LIMITED")
        return P.error("RATE_LIMITED", f"too many open sessions (max {self.cfg.max_sessions})", recoverable=True)

    # ------------------------------------------------------------------ websocket
    async def ws_speak(self, request: web.Request):
        ws = _SpeakSocket(heartbeat=30.0, max_msg_size=P.MAX_FRAME_BYTES)
        await ws.prepare(request)
        authed = self._http_authed(request)  # True without --auth-token: every socket counts at once
        if authed and not self.admission.try_acquire():
            await ws.send_json(self.too_many_sessions())
            await ws.close(code=1013, message=b"too many sessions")
            return ws
        if not authed and self.unauthenticated >= max(16, 4 * self.cfg.max_sessions):
            await ws.send_json(self.too_many_sessions())
            await ws.close(code=1013, message=b"too many unauthenticated sockets")
            return ws
        s = Session(self, ws, pre_authed=bool(self.cfg.auth_token) and authed, holds_slot=authed)
        self.sessions.add(s)
        self.unauthenticated += not authed
        try:
            await s.run()
        except Exception:  # noqa: BLE001 - a session's failure must never take the server down
            import traceback

            traceback.print_exc()
        finally:
            self.sessions.discard(s)
            if s.waits_auth:
                self.unauthenticated -= 1
            if s.holds_slot:
                s.holds_slot = False
                self.admission.release()
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
        try:
            fields, audio = await read_voice_form(request, limit)
        except FormError as e:
            return _json_error(e.status, e.code, e.message)
        if not audio:
            return _json_error(400, "BAD_AUDIO", "missing 'audio' file")
        replace = request.method == "PUT"
        voice_id = request.match_info.get("voice_id") or fields.get("id") or None
        if self.voices.languages is None:
            self.voices.languages = self.engine.languages if self.engine.status == "loaded" else config_languages(self.cfg.model)
        try:
            info = await asyncio.get_running_loop().run_in_executor(None, lambda: self.voices.add(
                audio, transcript=fields.get("transcript", ""), name=fields.get("name"), voice_id=voice_id,
                language=fields.get("language", "auto"), description=fields.get("description", ""), mode=fields.get("mode") or None,
                replace=replace))
        except VoiceError as e:
            return _json_error(e.status, e.code, e.message)
        return web.json_response({"voice": info.public()}, status=200 if info.replaced else 201)

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
            body["error"] = P.redact(self.engine.load_error or "")
        return web.json_response(body)

    async def metrics_page(self, request):
        return web.Response(text=self.metrics.render(len(self.sessions), self.engine.queue_depth(), self.engine.status),
                            content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})

    async def index(self, request):
        raise web.HTTPFound("/speak")

    async def page(self, request):
        return web.FileResponse(STATIC / "speak.html")


def create_app(cfg: ServerConfig, engine: Engine | None = None) -> web.Application:
    return SpeakServer(cfg, engine).app
