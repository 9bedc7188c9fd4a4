"""One WebSocket speak session (speak-protocol.md §2-5): state machine, request queue, audio out.

A reader loop handles client messages; a per-session sender processes the queue one request at a
time: `speaking` -> audio (binary PCM or JSON `audioChunk`, resampled to the session rate) ->
`complete`. `cancel` cuts the request in progress (no audio is sent after the cancel is read)
and drops the queued ones, each with `error{CANCELLED}`.

With `--auth-token`, a socket holds no admission slot until it authenticates (a token in the
upgrade's `Authorization` header or in `start.authToken`); it has `--auth-timeout` seconds from
`ready` to do so, else `error{UNAUTHORIZED}` and close 1008.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import deque

import numpy as np
from aiohttp import WSMsgType, web

from . import protocol as P
from .access import token_ok
from .engine import Request
from .textsession import StreamedText


def encode_pcm(x: np.ndarray, encoding: str) -> bytes:
    if encoding == "pcm32f":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class Resampler:
    """24 kHz -> session rate, streaming (continuous across chunks)."""

    def __init__(self, rate: int, src: int = 24000):
        self.rs = None
        if rate != src:
            import soxr

            self.rs = soxr.ResampleStream(src, rate, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.rs is None:
            return x
        return self.rs.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)


class Session(StreamedText):
    def __init__(self, server, ws: web.WebSocketResponse, pre_authed: bool, holds_slot: bool = False):
        self.server, self.ws, self.engine = server, ws, server.engine
        self.cfg = server.cfg
        self.id = str(uuid.uuid4())
        self.authed = pre_authed or not self.cfg.auth_token
        self.holds_slot = holds_slot  # an admission slot, released by the server when the session ends
        self.waits_auth = not self.authed  # counted in server.unauthenticated
        self.auth_deadline: float | None = None  # set at `ready` for a socket without a token yet
        self.started = False
        self.sample_rate, self.encoding, self.transport = 24000, "pcm16", "binary"
        self.voice: str | None = None  # None: the server's default voice
        self.language = "auto"
        self.contract_id = None
        self.queue: deque = deque()
        self.has_work = asyncio.Event()
        self.current: dict | None = None
        self.closed = False
        self.last_activity = time.monotonic()
        self._n = 0

    # ------------------------------------------------------------------ sending
    async def send(self, obj: dict) -> bool:
        if self.closed or self.ws.closed:
            return False
        try:
            await self.ws.send_json(obj)
            return True
        except (ConnectionError, RuntimeError):
            self.closed = True
            return False

    async def send_bytes(self, b: bytes) -> bool:
        if self.closed or self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(b)
            return True
        except (ConnectionError, RuntimeError):
            self.closed = True
            return False

    async def error(self, code: str, message: str, request_id=None, recoverable=None) -> None:
        self.server.metrics.error(code)
        await self.send(P.error(code, P.redact(message), request_id, recoverable))

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = True
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode()[:120])

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        eng = self.engine
        eng.ensure_loading()
        last = None
        while eng.status == "loading":
            if eng.progress != last:
                last = eng.progress
                await self.send({"type": "loading", "stage": last[0], "progress": round(last[1], 3)})
            await asyncio.sleep(0.1)
        if eng.status != "loaded":
            await self.error("MODEL_LOADING", f"the model could not be loaded: {eng.load_error}")
            await self.close(1011, "model loading failed")
            return
        await self.send({"type": "ready", "sessionId": self.id, "voiceLoaded": self.server.voices.default_id,
                         "capabilities": {"streaming": True, "languages": eng.languages, "encodings": list(P.ENCODINGS),
                                          "sampleRates": list(P.SAMPLE_RATES), "maxChars": self.cfg.max_chars},
                         "model": eng.model_name})
        if not self.authed and self.cfg.auth_timeout > 0:
            self.auth_deadline = time.monotonic() + self.cfg.auth_timeout
        sender = asyncio.create_task(self._sender())
        try:
            await self._reader()
        finally:
            self.closed = True
            self._cancel_all(notify=False)
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def _reader(self) -> None:
        limits = P.Limits(self.cfg.max_chars, tuple(self.engine.languages))
        while not self.closed:
            wait = 1.0
            if not self.authed and self.auth_deadline is not None:
                left = self.auth_deadline - time.monotonic()
                if left <= 0:
                    await self.error("UNAUTHORIZED", f"no valid authToken within {self.cfg.auth_timeout:g} s (start.authToken)")
                    await self.close(1008, "unauthorized")
                    return
                wait = min(wait, left)
            try:
                msg = await self.ws.receive(timeout=wait)
            except asyncio.TimeoutError:
                busy = self.current is not None or self.queue
                if not busy and self.cfg.idle_timeout and time.monotonic() - self.last_activity > self.cfg.idle_timeout:
                    await self.error("TIMEOUT", f"session idle for more than {self.cfg.idle_timeout:g} s")
                    await self.close(1001, "idle timeout")
                    return
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            self.last_activity = time.monotonic()
            try:
                m = P.parse(msg.data if msg.type == WSMsgType.TEXT else bytes(msg.data or b""), limits)
            except P.ProtocolError as e:
                await self.error(e.code, e.message, e.request_id)
                continue
            await getattr(self, f"_on_{m['type']}")(m)

    # ------------------------------------------------------------------ messages
    async def _authenticate(self, token) -> bool:
        """True when the session may go on; otherwise it has been told why and closed (a wrong
        token: UNAUTHORIZED + 1008; no free admission slot: RATE_LIMITED + 1013)."""
        if self.authed:
            return True
        if not token_ok(token, self.cfg.auth_token):
            await self.error("UNAUTHORIZED", "a valid authToken is required (start.authToken)")
            await self.close(1008, "unauthorized")
            return False
        self.authed = True
        if self.waits_auth:
            self.waits_auth = False
            self.server.unauthenticated -= 1
        if not self.server.admission.try_acquire():
            await self.send(self.server.too_many_sessions())
            await self.close(1013, "too many sessions")
            return False
        self.holds_slot = True
        return True

    async def _on_start(self, m: dict) -> None:
        if not await self._authenticate(m["authToken"]):
            return
        voice = self.voice
        if m["voice"] is not None:
            if m["voice"] == "default":
                voice = None
            else:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.server.voices.get, m["voice"])
                except Exception as e:  # VoiceError: unknown, bad id or broken
                    return await self.error("VOICE_NOT_FOUND", getattr(e, "message", str(e)))
                voice = m["voice"]
        self.voice = voice
        self.sample_rate = m["sampleRate"] or self.sample_rate
        self.encoding = m["encoding"] or self.encoding
        self.transport = m["transport"] or self.transport
        self.language = m["language"] or self.language
        self.contract_id = m["contractId"] if m["contractId"] is not None else self.contract_id
        self.started = True
        await self.send({"type": "started", "sampleRate": self.sample_rate, "encoding": self.encoding,
                         "voice": self.voice or "default", "language": self.language, "contractId": self.contract_id})

    async def _on_speak(self, m: dict) -> None:
        if not self.started:
            if not await self._authenticate(None):
                return
            await self._on_start({"authToken": None, "voice": None, "sampleRate": None, "encoding": None, "transport": None,
                                  "language": None, "contractId": None})
        if len(self.queue) + (self.current is not None) >= self.cfg.max_queue:
            return await self.error("RATE_LIMITED", f"too many queued requests (max {self.cfg.max_queue})", m["id"])
        if self._stream_refused(m):
            return await self.error("INVALID_MESSAGE", "a streamed request is already open: end it (text with final: true) or cancel", m["id"])
        self._n += 1
        m["id"] = m["id"] or f"r{self._n}"
        m["received"] = time.monotonic()
        if m["priority"] == "high":
            self.queue.appendleft(m)
        else:
            self.queue.append(m)
        if m.get("final") is False:
            self._open_stream(m)
        self.server.metrics.request()
        self.has_work.set()

    async def _on_cancel(self, m: dict) -> None:
        await self._cancel_all(notify=True)

    async def _on_stop(self, m: dict) -> None:
        await self._cancel_all(notify=True)
        await self.send({"type": "stopped", "reason": m["reason"]})
        await self.close(1000, "stopped")

    def _cancel_all(self, notify: bool):
        """Cut the current request (its sender reports CANCELLED) and drop the queue."""
        cur = self.current
        if cur is not None:
            cur["cancelled"] = True
            if cur.get("req") is not None:
                cur["req"].cancelled.set()
        dropped = list(self.queue)
        self.queue.clear()
        self.open_stream = None
        for x in dropped + [cur or {}]:
            if x.get("stream") is not None:
                x["stream"].cancel()

        async def notify_dropped():
            for q in dropped:
                await self.error("CANCELLED", "request cancelled", q["id"])

        return notify_dropped() if notify else None

    # ------------------------------------------------------------------ audio out
    async def _sender(self) -> None:
        while not self.closed:
            await self.has_work.wait()
            if not self.queue:
                self.has_work.clear()
                continue
            item = self.queue.popleft()
            self.current = item
            try:
                await self._process(item)
            finally:
                self.current = None
                if self.open_stream is item:  # the request ended before its text did
                    self.open_stream = None
                    item["stream"].cancel()
                self.last_activity = time.monotonic()

    async def _process(self, item: dict) -> None:
        rid = item["id"]
        t0 = time.monotonic()  # head of the queue (>= received)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        req = Request(text=item["text"], voice_id=self.voice, language=self.language, loop=loop, deliver=inbox.put_nowait,
                      seed=item.get("seed"), request_id=rid, text_stream=item.get("stream"), lookahead=item.get("lookahead", 0))
        item["req"] = req
        if item.get("cancelled"):
            return await self.error(*(item.get("abort") or ("CANCELLED", "request cancelled")), rid)
        if not await self.send({"type": "speaking", "id": rid}):
            return
        self.engine.submit(req)
        rs = Resampler(self.sample_rate)
        seq, sent_samples, first_audio = 0, 0, None
        while True:
            ev = await self._next_event(inbox, item)
            kind = ev[0]
            if kind == "audio":
                req.consumed()
                if item.get("cancelled") or self.closed:
                    continue  # nothing goes out after a cancel
                pcm = rs(ev[1])
                if pcm.size:
                    if first_audio is None:
                        first_audio = time.monotonic() - t0
                    ok = await self._send_audio(rid, pcm, seq, sent_samples, False)
                    seq, sent_samples = seq + 1, sent_samples + pcm.size
                    if not ok:
                        req.cancelled.set()
            elif kind == "done":
                tail = rs(np.zeros(0, np.float32), last=True)
                if tail.size or self.transport == "json":
                    if first_audio is None and tail.size:
                        first_audio = time.monotonic() - t0
                    await self._send_audio(rid, tail, seq, sent_samples, True)
                    sent_samples += tail.size
                dur = time.monotonic() - t0
                audio_s = sent_samples / self.sample_rate
                self.server.metrics.complete(first_audio, dur / audio_s if audio_s else None, audio_s)
                await self.send({"type": "complete", "id": rid, "durationMs": round(dur * 1000), "charactersProcessed": len(item["stream"].text if item.get("stream") else item["text"]),
                                 "audioLengthMs": round(audio_s * 1000), "firstAudioMs": None if first_audio is None else round(first_audio * 1000),
                                 "contractId": self.contract_id})
                return
            elif kind == "cancelled":
                return await self.error(*(item.get("abort") or ("CANCELLED", "request cancelled")), rid)
            elif kind == "error":
                return await self.error(ev[1], ev[2], rid)

    async def _send_audio(self, rid, pcm: np.ndarray, seq: int, start: int, final: bool) -> bool:
        data = encode_pcm(pcm, self.encoding)
        if self.transport == "json":
            return await self.send({"type": "audioChunk", "id": rid, "data": base64.b64encode(data).decode("ascii"), "sequenceNumber": seq,
                                    "isFinal": final, "timestampMs": round(start * 1000 / self.sample_rate)})
        return await self.send_bytes(data) if data else True
