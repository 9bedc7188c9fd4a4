"""Readiness, drain on SIGTERM, and the load gauges an autoscaler reads.

* `GET /readyz`: 200 once the model is loaded and warmed up, 503 while it loads (the probe starts
  a lazy load), after a failed load, and while the server drains. `/healthz` stays the liveness
  check (200 while the process serves).
* SIGTERM starts a drain: `/readyz` turns 503 at once (a load balancer stops sending new
  sessions), new sessions are refused (`error{SERVER_DRAINING}` + close 1012 on the WebSocket,
  503 `SERVER_DRAINING` with `Retry-After` on HTTP synthesis), and the requests in progress get up
  to `--drain-seconds` to finish. Then the normal shutdown runs: every session still open gets
  `stopped{server_shutdown}` and a 1001 close, and the process exits 0. A second SIGTERM (or
  SIGINT at any time) skips what is left of the drain.
* Gauges (`Lifecycle.gauges`, rendered by `/metrics`): active sessions (open WebSocket sessions
  plus in-flight HTTP synthesis requests, what `--max-sessions` admits), active requests (every
  request accepted and not finished, on every route), waiting requests (accepted, not generating
  yet; `qwen3tts_queue_depth` stays the engine's own count),
  capacity (`--max-sessions`), ready, draining.

Protocol and I/O only: this module never imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time

from aiohttp import web

from .admission import HTTP_SYNTHESIS

SESSION_PATH = "/api/v1/speak"
DRAIN_CLOSE = 1012  # WebSocket "service restart": try again (another replica)


def _raise_graceful_exit() -> None:
    raise web.GracefulExit()  # a SystemExit: leaves the loop, then aiohttp's shutdown runs


class Lifecycle:
    def __init__(self, server, drain_seconds: float = 30.0):
        self.server = server
        self.drain_seconds = drain_seconds
        self.draining = False
        self.drain_started: float | None = None
        self.http_active = 0  # HTTP synthesis requests in flight
        self._drain_task: asyncio.Task | None = None

    def install(self, app: web.Application) -> None:
        app.router.add_get("/readyz", self.readyz)
        app.middlewares.append(self._middleware)
        app.on_startup.append(self._on_startup)
        self.server.metrics.gauge_source = self.gauges

    # ------------------------------------------------------------------ readiness
    @property
    def state(self) -> str:
        if self.draining:
            return "draining"
        st = self.server.engine.status
        return "ready" if st == "loaded" else st  # loading | not_loaded | failed

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.draining:
            self.server.engine.ensure_loading()  # a readiness probe wants the model: start a lazy load
        state = self.state
        return web.json_response({"status": state}, status=200 if state == "ready" else 503,
                                 headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ gauges
    def active_requests(self) -> int:
        """Requests accepted and not finished: WebSocket requests in progress or queued in their
        session, plus in-flight HTTP synthesis (and whatever another route counts with `track`)."""
        ws = sum(len(s.queue) + (s.current is not None) for s in list(self.server.sessions))
        return ws + self.http_active

    @contextlib.contextmanager
    def track(self):
        """Count one in-flight request of a route other than the WebSocket (for the gauges and the drain)."""
        self.http_active += 1
        try:
            yield
        finally:
            self.http_active -= 1

    def queue_depth(self) -> int:
        """Accepted requests not generating yet: queued in a session or in the engine's inbox."""
        eng = self.server.engine
        ws_waiting = sum(len(s.queue) for s in list(self.server.sessions))
        return ws_waiting + max(0, eng.queue_depth() - len(getattr(eng, "_active", ())))

    def gauges(self) -> dict[str, tuple[str, float]]:
        """{metric name: (help, value)} for /metrics. Sessions and capacity come from the server's
        shared admission counter."""
        adm = self.server.admission
        return {
            "qwen3tts_active_sessions": ("open WebSocket sessions plus in-flight HTTP synthesis requests", adm.in_use),
            "qwen3tts_active_requests": ("requests accepted and not finished, all routes", self.active_requests()),
            "qwen3tts_waiting_requests": ("requests accepted, not generating yet", self.queue_depth()),
            "qwen3tts_capacity_sessions": ("the admission limit (--max-sessions)", adm.capacity),
            "qwen3tts_ready": ("1 when /readyz answers 200", 1 if self.state == "ready" else 0),
            "qwen3tts_draining": ("1 while the server drains after SIGTERM", 1 if self.draining else 0),
        }

    # ------------------------------------------------------------------ refusing new work while draining
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        path = request.path
        if (request.method, path) in HTTP_SYNTHESIS:
            if self.draining:
                return web.json_response({"error": {"code": "SERVER_DRAINING", "message": "the server is shutting down; retry (another replica)"}},
                                         status=503, headers={"Retry-After": "1"})
            with self.track():
                return await handler(request)
        if path == SESSION_PATH and self.draining:
            ws = web.WebSocketResponse()
            if not ws.can_prepare(request).ok:
                return web.json_response({"error": {"code": "SERVER_DRAINING", "message": "the server is shutting down"}},
                                         status=503, headers={"Retry-After": "1"})
            await ws.prepare(request)
            self.server.metrics.error("SERVER_DRAINING")
            await ws.send_json({"type": "error", "id": None, "code": "SERVER_DRAINING",
                                "message": "the server is shutting down; reconnect (another replica)", "recoverable": True})
            await ws.close(code=DRAIN_CLOSE, message=b"server draining")
            return ws
        return await handler(request)

    # ------------------------------------------------------------------ drain
    async def _on_startup(self, app) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests, another host program): the host handles signals
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)  # replaces aiohttp's immediate exit
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def _on_sigterm(self) -> None:
        if self.draining:  # a second SIGTERM: stop waiting
            _raise_graceful_exit()
        self._drain_task = asyncio.get_running_loop().create_task(self.drain_then_exit())

    def busy(self) -> bool:
        return self.active_requests() > 0

    async def drain(self) -> None:
        """Refuse new sessions and wait (up to drain_seconds) for the requests in progress."""
        self.draining = True
        self.drain_started = time.monotonic()
        deadline = self.drain_started + self.drain_seconds
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def drain_then_exit(self) -> None:
        await self.drain()
        asyncio.get_running_loop().call_soon(_raise_graceful_exit)
