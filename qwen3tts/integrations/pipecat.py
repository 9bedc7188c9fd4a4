"""Pipecat TTS service for a qwen3tts server, over the speak WebSocket (`/api/v1/speak`,
docs/protocol.md).

    from qwen3tts.integrations.pipecat import Qwen3TTSService

    tts = Qwen3TTSService(url="ws://127.0.0.1:8765/api/v1/speak", voice="arctic-slt")
    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts, transport.output(), assistant_agg])

* One WebSocket session per service; `start` asks for the pipeline's output sample rate (the
  server resamples) as PCM16 binary frames, the voice and the language.
* Text reaches `run_tts` as Pipecat aggregates it (sentences, the default; token-by-token
  aggregation would make one request per token, so keep sentences until the server's streamed
  text input is used here); each piece is one `speak` request with an id `<context id>#<n>`. Binary audio after `speaking{id}` belongs to that
  request's context and becomes `TTSAudioRawFrame`s; when Pipecat flushes the turn and every
  request of it has its `complete`, the context ends with a `TTSStoppedFrame`.
* An interruption sends `cancel`: the server stops generating at the next frame and sends no
  more audio; audio still in flight for the interrupted context is dropped here. (When an
  uninterruptible context also has requests queued, `cancel` would cut them too, so it is not
  sent; the interrupted context's audio is still dropped.)
* Changing `voice` / `language` through Pipecat's settings sends a new `start`.

Follows Pipecat's own WebSocket services (`WebsocketTTSService`, e.g. Deepgram's). Needs
`pip install 'qwen3tts[pipecat]'`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame, TTSStoppedFrame
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import WebsocketTTSService
from pipecat.transcriptions.language import Language
from websockets.protocol import State

LANGUAGES = {"en": "english", "zh": "chinese", "de": "german", "it": "italian", "pt": "portuguese", "es": "spanish",
             "ja": "japanese", "ko": "korean", "fr": "french", "ru": "russian"}
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


def language_name(language) -> str:
    """A Pipecat `Language` ('en', 'en-US', ...) -> the protocol's language name, or 'auto'."""
    if language is None:
        return "auto"
    code = str(getattr(language, "value", language)).lower().replace("_", "-").split("-")[0]
    return LANGUAGES.get(code, "auto")


class Qwen3TTSService(WebsocketTTSService):
    """Text to speech with a qwen3tts server (`python -m qwen3tts.serve`)."""

    Settings = TTSSettings
    _settings: Settings

    def __init__(self, *, url: str = "ws://127.0.0.1:8765/api/v1/speak", voice: str | None = None, language: Language | str | None = None,
                 auth_token: str | None = None, sample_rate: int | None = None, settings: Settings | None = None, **kwargs):
        """Args:
            url: the server's speak WebSocket.
            voice: a voice id from `GET /api/v1/voices`; None: the server's default voice.
            language: a Pipecat `Language` (or code); None: automatic.
            auth_token: the server's `--auth-token`, if it has one.
            sample_rate: output rate (default: the pipeline's); one of 8000, 16000, 22050, 24000, 44100, 48000.
        """
        if sample_rate is not None and sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}")
        default_settings = self.Settings(model="qwen3-tts", voice=voice, language=language)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(sample_rate=sample_rate, push_start_frame=True, push_stop_frames=False, pause_frame_processing=True,
                         settings=default_settings, **kwargs)
        self._url, self._auth_token = url, auth_token
        self._receive_task = None
        self._n = 0
        self._req_ctx: dict[str, str] = {}  # request id -> context id, for requests not yet complete
        self._flushed: set[str] = set()  # contexts whose turn has ended (no more text comes)
        self._dropped: set[str] = set()  # interrupted contexts: their audio is discarded
        self._current: str | None = None  # request whose audio is arriving

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        return language_name(language)

    # ------------------------------------------------------------------ connection
    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"qwen3tts serves {SAMPLE_RATES} Hz, not {self.sample_rate}")
        await self._connect()

    async def _connect(self):
        await super()._connect()
        await self._connect_websocket()
        if self._websocket and not self._receive_task:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self):
        await super()._disconnect()
        if self._receive_task:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    def _start_message(self) -> dict:
        msg = {"type": "start", "sampleRate": self.sample_rate, "encoding": "pcm16", "transport": "binary",
               "voice": self._settings.voice or "default", "language": language_name(self._settings.language)}
        if self._auth_token:
            msg["authToken"] = self._auth_token
        return msg

    async def _connect_websocket(self):
        try:
            if self._websocket and self._websocket.state is State.OPEN:
                return
            self._websocket = await self._websocket_connect(self._url)
            await self._websocket.send(json.dumps(self._start_message()))
            self._req_ctx.clear()
            self._current = None
            await self._call_event_handler("on_connected")
        except Exception as e:  # noqa: BLE001 - reported as Pipecat errors, as its services do
            self._websocket = None
            await self.push_error_frame(ErrorFrame(error=f"{self} could not connect to {self._url}: {e}", exception=e))
            await self._call_event_handler("on_connection_error", f"{e}")

    async def _disconnect_websocket(self):
        try:
            await self.stop_all_metrics()
            if self._websocket:
                await self._websocket.send(json.dumps({"type": "stop", "reason": "client_closing"}))
                await self._websocket.close()
        except Exception as e:  # noqa: BLE001
            logger.debug(f"{self} closing: {e}")
        finally:
            self._websocket = None
            await self._call_event_handler("on_disconnected")

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:
        changed = await super()._update_settings(delta)
        if ("voice" in changed or "language" in changed) and self._websocket:
            await self._websocket.send(json.dumps(self._start_message()))  # applies to the following requests
        return changed

    # ------------------------------------------------------------------ requests
    async def _finish_if_done(self, ctx: str) -> None:
        if ctx in self._flushed and ctx not in self._req_ctx.values():
            self._flushed.discard(ctx)
            if self.audio_context_available(ctx):
                await self.append_to_audio_context(ctx, TTSStoppedFrame(context_id=ctx))
                await self.remove_audio_context(ctx)

    async def flush_audio(self, context_id: str | None = None):
        ctx = context_id or self.get_active_audio_context_id()
        if ctx:
            self._flushed.add(ctx)
            await self._finish_if_done(ctx)

    async def on_audio_context_interrupted(self, context_id: str):
        await self.stop_all_metrics()
        self._dropped.add(context_id)
        self._flushed.discard(context_id)
        pending = set(self._req_ctx.values())
        if pending and pending <= self._dropped and self._websocket:
            try:
                await self._websocket.send(json.dumps({"type": "cancel"}))
            except Exception as e:  # noqa: BLE001
                logger.warning(f"{self} could not send cancel: {e}")
        if self._current is not None and self._req_ctx.get(self._current) in self._dropped:
            self._current = None
        await super().on_audio_context_interrupted(context_id)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        try:
            if not self._websocket or self._websocket.state is State.CLOSED:
                await self._connect()
            self._n += 1
            req = f"{context_id}#{self._n}"
            self._req_ctx[req] = context_id
            self._dropped.discard(context_id)
            await self._get_websocket().send(json.dumps({"type": "speak", "text": text, "id": req}))
            yield None  # the audio arrives on the receive task
        except Exception as e:  # noqa: BLE001
            yield ErrorFrame(error=f"{self} error: {e}")

    def _get_websocket(self):
        if self._websocket:
            return self._websocket
        raise ConnectionError("websocket not connected")

    async def _receive_messages(self):
        async for message in self._get_websocket():
            if isinstance(message, bytes):
                ctx = self._req_ctx.get(self._current) if self._current else None
                if ctx and ctx not in self._dropped and message:
                    await self.stop_ttfb_metrics()
                    await self.append_to_audio_context(ctx, TTSAudioRawFrame(message, self.sample_rate, 1, context_id=ctx))
                continue
            try:
                msg = json.loads(message)
            except ValueError:
                logger.warning(f"{self} non-JSON message from the server")
                continue
            kind, rid = msg.get("type"), msg.get("id")
            if kind == "speaking":
                self._current = rid
            elif kind in ("complete", "error") and rid in self._req_ctx:
                ctx = self._req_ctx.pop(rid)
                if self._current == rid:
                    self._current = None
                if kind == "error" and msg.get("code") != "CANCELLED" and ctx not in self._dropped:
                    await self.push_error_frame(ErrorFrame(error=f"{self} {msg.get('code')}: {msg.get('message')}"))
                if ctx in self._dropped and ctx not in self._req_ctx.values():
                    self._dropped.discard(ctx)
                await self._finish_if_done(ctx)
            elif kind == "error":
                await self.push_error_frame(ErrorFrame(error=f"{self} {msg.get('code')}: {msg.get('message')}"))
            elif kind == "stopped":
                logger.debug(f"{self} session stopped by the server ({msg.get('reason')})")
