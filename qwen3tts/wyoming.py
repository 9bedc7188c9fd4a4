"""`python -m qwen3tts.wyoming`: a Wyoming protocol TTS server (Home Assistant's voice pipeline).

    python -m qwen3tts.wyoming --uri tcp://0.0.0.0:10200 --model Qwen/Qwen3-TTS-12Hz-0.6B-Base --voices-dir voices

Settings are the speak server's (`qwen3tts.serve.FLAGS`, same `QWEN3TTS_*` environment
variables) minus the HTTP-only ones, plus `--uri` (tcp://HOST:PORT, unix://PATH or stdio://).

Events (the `wyoming` package's types):
* `describe` -> `info`: one TTS program, `qwen3tts`, listing the stored voices (the built-in
  one first; every voice speaks every language of the model) and
  `supports_synthesize_streaming=True`;
* `synthesize` -> `audio-start` (24 kHz, 16-bit, mono), `audio-chunk` per generated chunk (80 ms
  per frame, `--frames-per-chunk`), `audio-stop`; `voice.name` picks a stored voice (none: the
  default voice), `voice.language` (ISO code or name) the language;
* `synthesize-start` / `synthesize-chunk`... / `synthesize-stop`: text is cut at sentence ends as
  it arrives and each sentence is spoken at once (one `audio-start`/`audio-chunk`.../`audio-stop`
  cycle per sentence, as wyoming-piper does), then `synthesize-stopped`. A `synthesize` sent
  inside a stream (Home Assistant sends one for older servers) is ignored. The library's
  streamed text input (`Qwen3TTS.stream_text`, where it exists) would replace the sentence cut:
  see `_Stream`.
* failures are `error` events with a code (`VOICE_NOT_FOUND`, `INVALID_TEXT`, `SYNTHESIS_ERROR`);
  the connection stays usable. A client that disconnects stops its generation at the next frame.

The model is reached through the library (`qwen3tts.Qwen3TTS`, the voices store); one worker
thread owns it, so requests from several connections are spoken one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from . import __version__, options
from .config import QUANTIZE_MODES
from .sentences import split_sentences
from .settings import resolve_dtype

RATE, WIDTH, CHANNELS = 24000, 2, 1
# speak-server flags that mean nothing here (HTTP / WebSocket sessions)
HTTP_ONLY = {"host", "port", "auth-token", "max-sessions", "max-queue", "idle-timeout", "max-upload-mb"}
ISO = {"en": "english", "zh": "chinese", "de": "german", "it": "italian", "pt": "portuguese", "es": "spanish",
       "ja": "japanese", "ko": "korean", "fr": "french", "ru": "russian"}


def parse_args(argv=None):
    from .serve import FLAGS

    ap = argparse.ArgumentParser(prog="python -m qwen3tts.wyoming", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    opts = options.current()
    ap.add_argument("--uri", default=opts.wyoming_uri,
                    help="tcp://HOST:PORT, unix://PATH or stdio:// [env QWEN3TTS_WYOMING_URI]")
    for name, typ, default, help_ in FLAGS:
        if name in HTTP_ONLY:
            continue
        env = "QWEN3TTS_" + name.upper().replace("-", "_")
        raw = opts.var(env)
        value = typ(raw) if raw not in (None, "") else default
        ap.add_argument(f"--{name}", type=typ, default=value, help=f"{help_} [env {env}]")
    ap.add_argument("--greedy", action="store_true", default=opts.greedy,
                    help="greedy decoding (deterministic; for tests and parity) [env QWEN3TTS_GREEDY]")
    return ap.parse_args(argv)


def language_of(requested: str | None, languages: list[str]) -> str:
    """A Wyoming language ('en', 'en_US', 'English') -> one of the model's languages, else 'auto'."""
    if not requested:
        return "auto"
    r = requested.strip().lower().replace("-", "_")
    name = ISO.get(r.split("_")[0], r)
    for lang in languages:
        if lang.lower() == name:
            return lang
    return "auto"


def iso_codes(languages: list[str]) -> list[str]:
    names = {v: k for k, v in ISO.items()}
    return [names[l.lower()] for l in languages if l.lower() in names]


class Synthesizer:
    """The model, its voices, and one worker thread. `speak(text, voice, language)` is an async
    iterator of PCM16 chunks (bytes); closing it early stops the generation at the next chunk."""

    def __init__(self, args):
        import torch

        from .builtin_voice import VoiceStoreWithBuiltin
        from .pipeline import Qwen3TTS

        self.args = args
        self.tts = Qwen3TTS.from_pretrained(args.model, device=args.device, dtype=getattr(torch, resolve_dtype(args.dtype, args.device)),
                                            quantize=args.quantize)
        try:
            self.tts.warm_up()
        except Exception:  # noqa: BLE001 - the first request reports a real failure
            pass
        self.voices = VoiceStoreWithBuiltin(args.voices_dir, default_id=args.default_voice, model_tag=str(self.tts.path))
        self.languages = list(self.tts.languages)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="qwen3tts-wyoming")
        self.lock = asyncio.Lock()

    def info(self):
        from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

        attribution = Attribution(name="qwen3tts (Qwen3-TTS)", url="https://huggingface.co/Qwen/Qwen3-TTS-12Hz-0.6B-Base")
        codes = iso_codes(self.languages)
        voices = []
        for v in self.voices.list()[0]:
            own = iso_codes([v.language])
            voices.append(TtsVoice(name=v.id, description=v.name, attribution=attribution, installed=True, version=None,
                                   languages=own + [c for c in codes if c not in own]))
        program = TtsProgram(name="qwen3tts", description="Qwen3-TTS text to speech, voice cloning, streaming",
                             attribution=attribution, installed=True, version=__version__, voices=voices,
                             supports_synthesize_streaming=True)
        return Info(tts=[program])

    def _prepare(self, text: str, voice_id: str | None, language: str):
        """In the worker thread: the voice prompt and a chunk iterator (validates everything)."""
        if voice_id:
            voice = self.voices.prompt(voice_id, self.tts)
        else:
            voice, _ = self.voices.default_prompt(self.tts)
        kw = {}
        if self.args.greedy:
            kw.update(do_sample=False, subtalker_dosample=False)
        if self.args.max_new_tokens:
            kw["max_new_tokens"] = self.args.max_new_tokens
        return iter(self.tts.stream(text, language=language, voice=voice, frames_per_chunk=self.args.frames_per_chunk, **kw))

    async def speak(self, text: str, voice_id: str | None, language: str):
        from .audio import float_to_pcm16

        loop = asyncio.get_running_loop()
        async with self.lock:
            it = await loop.run_in_executor(self.pool, self._prepare, text, voice_id, language)
            try:
                while True:
                    chunk = await loop.run_in_executor(self.pool, next, it, None)
                    if chunk is None:
                        break
                    yield float_to_pcm16(chunk.audio)
            finally:
                await loop.run_in_executor(self.pool, it.close)  # frees the generation at once


def error_code(e: Exception) -> str:
    if type(e).__name__ == "VoiceError":
        return "VOICE_NOT_FOUND" if e.code in ("NOT_FOUND", "BAD_ID") else "VOICE_UNUSABLE"
    if isinstance(e, ValueError) and "language" in str(e):
        return "UNSUPPORTED_LANGUAGE"
    if isinstance(e, ValueError) and "text" in str(e):
        return "INVALID_TEXT"
    return "SYNTHESIS_ERROR"


def _make_handler_class():
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.info import Describe
    from wyoming.server import AsyncEventHandler
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

    class Handler(AsyncEventHandler):
        """One client connection."""

        def __init__(self, synth: Synthesizer, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.synth = synth
            self.stream: asyncio.Queue | None = None  # sentences of the text stream in progress; None: not streaming
            self.stream_task: asyncio.Task | None = None
            self.buf = ""
            self.voice_id: str | None = None
            self.language = "auto"
            self.write_lock = asyncio.Lock()

        async def send(self, event: Event) -> None:
            async with self.write_lock:
                await self.write_event(event)

        def _voice(self, v) -> tuple[str | None, str]:
            if v is None:
                return None, "auto"
            return v.name or None, language_of(v.language, self.synth.languages)

        async def _speak(self, text: str, voice_id: str | None, language: str) -> None:
            """One audio-start / audio-chunk... / audio-stop cycle (an error event instead on failure)."""
            started, ts = False, 0
            try:
                async with contextlib.aclosing(self.synth.speak(text, voice_id, language)) as chunks:
                    async for pcm in chunks:
                        if not started:
                            await self.send(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS, timestamp=0).event())
                            started = True
                        await self.send(AudioChunk(rate=RATE, width=WIDTH, channels=CHANNELS, audio=pcm, timestamp=ts).event())
                        ts += len(pcm) * 1000 // (RATE * WIDTH * CHANNELS)
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception as e:  # noqa: BLE001 - reported to the client; the connection goes on
                await self.send(Error(text=str(getattr(e, "message", None) or e)[:500], code=error_code(e)).event())
                if not started:
                    return
            if not started:
                await self.send(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS, timestamp=0).event())
            await self.send(AudioStop(timestamp=ts).event())

        def _check_text(self, text: str) -> str | None:
            if len(text) > self.synth.args.max_chars:
                return f"text is longer than {self.synth.args.max_chars} characters"
            return None

        async def _run_stream(self, q: asyncio.Queue) -> None:
            # Sentence by sentence; with the library's streamed text input this loop would feed
            # each text piece to one `tts.stream_text` generation instead of one per sentence.
            try:
                while (sentence := await q.get()) is not None:
                    await self._speak(sentence, self.voice_id, self.language)
                await self.send(SynthesizeStopped().event())
            except ConnectionError:
                pass  # the client went away

        async def handle_event(self, event: Event) -> bool:
            try:
                return await self._handle(event)
            except ConnectionError:  # the client went away: its generation was closed on the way out
                return False

        async def _handle(self, event: Event) -> bool:
            if Describe.is_type(event.type):
                info = await asyncio.get_running_loop().run_in_executor(None, self.synth.info)
                await self.send(info.event())
                return True
            if Synthesize.is_type(event.type):
                if self.stream is not None:
                    return True  # sent inside a stream for older servers: the stream has the text
                s = Synthesize.from_event(event)
                text = " ".join((s.text or "").split())
                problem = "text is empty" if not text else self._check_text(text)
                if problem:
                    await self.send(Error(text=problem, code="INVALID_TEXT").event())
                    return True
                voice_id, language = self._voice(s.voice)
                await self._speak(text, voice_id, language)
                return True
            if SynthesizeStart.is_type(event.type):
                if self.stream is not None:
                    await self.send(Error(text="a text stream is already open", code="INVALID_MESSAGE").event())
                    return True
                self.voice_id, self.language = self._voice(SynthesizeStart.from_event(event).voice)
                self.buf, self.stream = "", asyncio.Queue()
                self.stream_task = asyncio.create_task(self._run_stream(self.stream))
                return True
            if SynthesizeChunk.is_type(event.type):
                if self.stream is None:
                    await self.send(Error(text="synthesize-chunk outside a text stream", code="INVALID_MESSAGE").event())
                    return True
                self.buf += SynthesizeChunk.from_event(event).text or ""
                sentences, self.buf = split_sentences(self.buf)
                for s in sentences:
                    problem = self._check_text(s)
                    if problem:
                        await self.send(Error(text=problem, code="INVALID_TEXT").event())
                    else:
                        self.stream.put_nowait(s)
                return True
            if SynthesizeStop.is_type(event.type):
                if self.stream is None:
                    await self.send(Error(text="synthesize-stop outside a text stream", code="INVALID_MESSAGE").event())
                    return True
                rest = " ".join(self.buf.split())
                if rest and not self._check_text(rest):
                    self.stream.put_nowait(rest)
                self.stream.put_nowait(None)
                task, self.stream, self.buf = self.stream_task, None, ""
                await task  # synthesize-stopped is sent when the last sentence is spoken
                return True
            return True  # other events (ping, ...) are not ours

        async def disconnect(self) -> None:
            if self.stream_task is not None and not self.stream_task.done():
                self.stream_task.cancel()

    return Handler


async def serve(args) -> None:
    from wyoming.server import AsyncServer

    synth = await asyncio.get_running_loop().run_in_executor(None, Synthesizer, args)
    handler = _make_handler_class()
    server = AsyncServer.from_uri(args.uri)
    print(f"qwen3tts Wyoming server on {args.uri} ({len(synth.voices.list()[0])} voices)", file=sys.stderr, flush=True)
    await server.run(partial(handler, synth))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quantize not in QUANTIZE_MODES:
        print(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, not {args.quantize!r}", file=sys.stderr)
        return 2
    try:
        import wyoming  # noqa: F401
    except ImportError:
        print("the Wyoming server needs the wyoming package: pip install 'qwen3tts[wyoming]'", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
