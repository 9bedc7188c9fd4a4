"""LiveKit Agents TTS for a qwen3tts server, over the speak WebSocket (`/api/v1/speak`,
docs/protocol.md).

    from qwen3tts.integrations.livekit import TTS

    session = AgentSession(stt=..., llm=..., tts=TTS(url="ws://127.0.0.1:8765/api/v1/speak", voice="arctic-slt"))

* `synthesize(text)` -> `ChunkedStream`: one WebSocket session, one `speak`, audio pushed as it
  arrives (PCM16 at `sample_rate`, resampled by the server), done at `complete`.
* `stream()` -> `SynthesizeStream` (capabilities `streaming=True`): text pushed with `push_text`
  is cut at sentence ends and each sentence is sent as a `speak` at once (the server queues
  them in order); `flush()` sends the rest and ends the segment when its last request is
  complete; `end_input()` finishes the stream.
* Closing a stream early (an interruption: LiveKit `aclose()`s it) closes the WebSocket; the
  server stops generating at the next frame (a disconnect cancels the session's requests).
* Server errors become `APIError`s (`VOICE_NOT_FOUND`, `INVALID_TEXT` ... not retryable;
  `MODEL_LOADING`, `RATE_LIMITED`, connection failures retryable).

Needs `pip install 'qwen3tts[livekit]'`.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from livekit.agents import APIConnectionError, APIError, APIStatusError, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from ..sentences import split_sentences

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
RETRYABLE = {"MODEL_LOADING", "RATE_LIMITED", "TIMEOUT", "SYNTHESIS_ERROR", "GPU_OUT_OF_MEMORY"}


class TTS(tts.TTS):
    def __init__(self, *, url: str = "ws://127.0.0.1:8765/api/v1/speak", voice: str | None = None, language: str = "auto",
                 sample_rate: int = 24000, auth_token: str | None = None, http_session: aiohttp.ClientSession | None = None):
        """Args:
            url: the server's speak WebSocket.
            voice: a voice id from `GET /api/v1/voices`; None: the server's default voice.
            language: "auto" or a language the server lists (e.g. "English").
            sample_rate: output rate, one of 8000, 16000, 22050, 24000, 44100, 48000.
            auth_token: the server's `--auth-token`, if it has one.
        """
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}")
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True), sample_rate=sample_rate, num_channels=1)
        self._url, self._voice, self._language, self._auth_token = url, voice, language, auth_token
        self._session, self._own_session = http_session, http_session is None

    @property
    def model(self) -> str:
        return "Qwen3-TTS"

    @property
    def provider(self) -> str:
        return "qwen3tts"

    def update_options(self, *, voice: str | None = None, language: str | None = None) -> None:
        """For the following requests."""
        if voice is not None:
            self._voice = voice
        if language is not None:
            self._language = language

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    def prewarm(self) -> None:
        """Open a session in the background so a lazily loading server loads its model now
        (call from a running event loop)."""
        self._prewarm_task = asyncio.get_running_loop().create_task(self._prewarm())

    async def _prewarm(self) -> None:
        try:
            ws = await self._connect(DEFAULT_API_CONNECT_OPTIONS.timeout)
            try:
                async for kind, _ in _events(ws):
                    if kind in ("ready", "error"):
                        break
            finally:
                await ws.close()
        except Exception:  # noqa: BLE001 - a failed prewarm is reported by the first real request
            pass

    async def aclose(self) -> None:
        task = getattr(self, "_prewarm_task", None)
        if task is not None:
            await utils.aio.gracefully_cancel(task)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ shared
    async def _connect(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(self._session.ws_connect(self._url, max_msg_size=1 << 22), timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise APIConnectionError(f"could not connect to {self._url}: {e}") from e
        start = {"type": "start", "sampleRate": self.sample_rate, "encoding": "pcm16", "transport": "binary",
                 "voice": self._voice or "default", "language": self._language}
        if self._auth_token:
            start["authToken"] = self._auth_token
        await ws.send_str(json.dumps(start))
        return ws


def _error(msg: dict) -> APIError:
    code = msg.get("code") or "ERROR"
    return APIStatusError(f"{code}: {msg.get('message')}", status_code=-1, body=msg, retryable=code in RETRYABLE)


async def _events(ws: aiohttp.ClientWebSocketResponse):
    """(kind, payload) from the server: ("audio", bytes) or (type, message dict); ends at close."""
    async for m in ws:
        if m.type == aiohttp.WSMsgType.BINARY:
            yield "audio", m.data
        elif m.type == aiohttp.WSMsgType.TEXT:
            msg = json.loads(m.data)
            yield msg.get("type"), msg
        elif m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break


class ChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: TTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        rid = utils.shortuuid()
        output_emitter.initialize(request_id=rid, sample_rate=self._tts.sample_rate, num_channels=1, mime_type="audio/pcm")
        ws = await self._tts._connect(self._conn_options.timeout)
        try:
            await ws.send_str(json.dumps({"type": "speak", "text": self._input_text, "id": rid}))
            async for kind, payload in _events(ws):
                if kind == "audio":
                    output_emitter.push(payload)
                elif kind == "complete" and payload.get("id") == rid:
                    output_emitter.flush()
                    return
                elif kind == "error":
                    raise _error(payload)
            raise APIConnectionError("the server closed the connection before the audio was complete")
        finally:
            await ws.close()


class SynthesizeStream(tts.SynthesizeStream):
    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions):
        super().__init__(tts=tts, conn_options=conn_options)
        self._tts: TTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        rid = utils.shortuuid()
        output_emitter.initialize(request_id=rid, sample_rate=self._tts.sample_rate, num_channels=1, mime_type="audio/pcm", stream=True)
        ws = await self._tts._connect(self._conn_options.timeout)
        # requests in the order the server answers them; a None entry ends a segment
        order: asyncio.Queue = asyncio.Queue()

        async def send_text() -> None:
            buf, segment_open, n = "", False, 0

            async def speak(text: str) -> None:
                nonlocal segment_open, n
                if not segment_open:
                    output_emitter.start_segment(segment_id=utils.shortuuid())
                    segment_open = True
                n += 1
                req = f"{rid}-{n}"
                order.put_nowait(req)
                self._mark_started()
                await ws.send_str(json.dumps({"type": "speak", "text": text, "id": req}))

            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    if buf.strip():
                        await speak(buf.strip())
                    buf = ""
                    if segment_open:
                        order.put_nowait(None)
                        segment_open = False
                    continue
                buf += data
                sentences, buf = split_sentences(buf)
                for s in sentences:
                    await speak(s)
            order.put_nowait(StopAsyncIteration)

        async def receive() -> None:
            events = _events(ws)
            while True:
                want = await order.get()
                if want is StopAsyncIteration:
                    return
                if want is None:
                    output_emitter.end_segment()
                    continue
                async for kind, payload in events:
                    if kind == "audio":
                        output_emitter.push(payload)
                    elif kind == "complete" and payload.get("id") == want:
                        break
                    elif kind == "error":
                        raise _error(payload)
                else:
                    raise APIConnectionError("the server closed the connection before the audio was complete")

        tasks = [asyncio.create_task(send_text(), name="qwen3tts.send"), asyncio.create_task(receive(), name="qwen3tts.receive")]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.gracefully_cancel(*tasks)
            await ws.close()


__all__ = ["TTS", "ChunkedStream", "SynthesizeStream"]
