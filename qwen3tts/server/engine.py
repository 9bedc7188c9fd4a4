"""Engine: one worker thread owns the model; sessions submit requests and get audio back.

* The worker loads the model on first need (lazy) or at start (`--preload`), reporting progress.
* Requests are generated **batched frame by frame**: every round advances all active requests by
  one frame in one batched step (`qwen3tts.batch.step`: one GEMM per weight for all of them, per
  request caches, positions, settings and random streams), so several sessions make progress at
  once for little more than the cost of one, and none waits for another to finish. Requests join
  and leave at frame boundaries.
* Backpressure: each request has a bounded number of undelivered chunks; a request whose client
  is slow is skipped in the round (others go on) until it drains.
* Cancellation: a request's `cancelled` flag is checked before every frame, so a cancel or a
  disconnect frees the worker at the next frame.

Results are handed to the asyncio side with `loop.call_soon_threadsafe`. This module imports no
torch at import time; the worker imports the model code when it loads.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field

from .protocol import redact

MAX_PENDING_CHUNKS = 50  # ~4 s of audio at 1 frame per chunk


@dataclass
class Request:
    text: str
    voice_id: str | None
    language: str
    loop: object  # asyncio loop of the session
    deliver: object  # callable(item) run on the loop: ("audio", np.ndarray) | ("done", dict) | ("error", code, msg)
    seed: int | None = None
    instruct: str | None = None  # only for checkpoints that take one (Engine.takes_instructions)
    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    pending: int = 0  # chunks posted, not yet consumed (worker increments, consumer decrements)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    frames: int = 0
    utt: object = None  # qwen3tts.batch.Utterance, built at admission
    text_stream: object = None  # qwen3tts.textstream.TextStream: a streamed request (text arrives while it speaks)
    lookahead: int = 0  # streamed: text tokens to hold before starting

    def consumed(self) -> None:
        self.pending -= 1


class Engine:
    def __init__(self, model: str | None = None, device: str = "cpu", dtype: str = "auto", voices=None, greedy: bool = False,
                 max_new_tokens: int | None = None, frames_per_chunk: int = 1, request_timeout: float = 300.0, quantize: str = "none",
                 cuda_graphs: str = "auto"):
        if dtype == "auto":  # bfloat16 weights on a GPU, float32 (the parity mode) elsewhere
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        self.model_ref, self.device, self.dtype, self.quantize = model, device, dtype, quantize
        self.cuda_graphs = cuda_graphs
        self.voices = voices
        self.greedy, self.max_new_tokens = greedy, max_new_tokens
        self.frames_per_chunk = frames_per_chunk
        self.request_timeout = request_timeout
        self.tts = None
        self.status = "not_loaded"  # not_loaded | loading | loaded | failed
        self.load_error: str | None = None
        self.progress: tuple[str, float] = ("weights", 0.0)
        self.languages: list[str] = ["auto"]
        self.takes_instructions = False  # VoiceDesign and CustomVoice 1.7B checkpoints do
        self.model_name = str(model or "Qwen/Qwen3-TTS-12Hz-0.6B-Base").rstrip("/").split("/")[-1]
        self.default_warning: str | None = None
        self._inbox: queue.Queue = queue.Queue()
        self._active: list[Request] = []
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qwen3tts-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ control (any thread)
    def ensure_loading(self) -> None:
        with self._cv:
            if self.status in ("not_loaded", "failed"):
                self.status, self.load_error, self.progress = "loading", None, ("weights", 0.0)
                self._inbox.put(("load",))

    def submit(self, req: Request) -> None:
        self._inbox.put(("req", req))

    def queue_depth(self) -> int:
        return self._inbox.qsize() + len(self._active)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for r in list(self._active):
            r.cancelled.set()
        self._inbox.put(("stop",))
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=0.05 if not self._active else 0.0)
            except queue.Empty:
                item = None
            if item is not None:
                if item[0] == "stop":
                    break
                if item[0] == "load":
                    self._load()
                elif item[0] == "req":
                    self._admit(item[1])
                continue  # drain the inbox before the next round
            if self._active:
                self._round()
        for r in self._active:
            self._post(r, ("error", "CANCELLED", "server shutting down"))

    def _load(self) -> None:
        try:
            import torch

            from ..pipeline import Qwen3TTS

            def prog(stage, p):
                self.progress = (stage, float(p))

            self.tts = Qwen3TTS.from_pretrained(self.model_ref, device=self.device, dtype=getattr(torch, self.dtype), progress=prog,
                                                quantize=self.quantize, cuda_graphs=self.cuda_graphs)
            self.languages = list(self.tts.languages)
            kind, size = self.tts.config.tts_model_type, self.tts.config.tts_model_size
            self.takes_instructions = kind == "voice_design" or (kind == "custom_voice" and size != "0b6")
            self.progress = ("warm-up", 1.0)
            try:  # one-time costs now, not in the first request (a failure here is the first request's to report)
                self.tts.warm_up()
            except Exception:  # noqa: BLE001
                pass
            if self.voices is not None:
                self.voices.model_tag = str(self.tts.path)
                if self.voices.default_id:
                    _, self.default_warning = self.voices.default_prompt(self.tts)
            self.progress = ("ready", 1.0)
            self.status = "loaded"
        except Exception as e:  # noqa: BLE001 - reported to clients as MODEL_LOADING
            self.tts = None
            self.load_error = redact(f"{type(e).__name__}: {e}".splitlines()[0])[:500]
            self.status = "failed"

    def _admit(self, r: Request) -> None:
        if r.cancelled.is_set():
            self._post(r, ("cancelled",))
            return
        if self.tts is None:
            self._post(r, ("error", "MODEL_LOADING", self.load_error or "the model is not loaded"))
            return
        try:
            voice = None
            if r.voice_id:
                voice = self.voices.prompt(r.voice_id, self.tts)
            elif self.voices is not None and self.voices.default_id:
                voice, _ = self.voices.default_prompt(self.tts)
            kw = {}
            if self.greedy:
                kw.update(do_sample=False, subtalker_dosample=False)
            if self.max_new_tokens:
                kw["max_new_tokens"] = self.max_new_tokens
            if r.seed is not None:
                kw["seed"] = r.seed
            if r.instruct:
                kw["instruct"] = r.instruct
            from ..batch import Utterance

            if r.text_stream is not None:
                from ..textfeed import TextUtterance

                r.utt = TextUtterance(self.tts, r.text_stream, language=r.language, voice=voice, frames_per_chunk=self.frames_per_chunk,
                                      lookahead=r.lookahead, **kw)
            else:
                r.utt = Utterance(self.tts, r.text, language=r.language, voice=voice, frames_per_chunk=self.frames_per_chunk, **kw)
            r.started = time.monotonic()
            self._active.append(r)
        except Exception as e:  # noqa: BLE001
            self._fail(r, e)

    def _round(self) -> None:
        """One batched step for every active request that can take a chunk."""
        from ..batch import step

        now = time.monotonic()
        batch = []
        for r in list(self._active):
            if r.cancelled.is_set():
                self._drop(r)
                self._post(r, ("cancelled",))
            elif now - r.started > self.request_timeout:
                self._drop(r)
                self._post(r, ("error", "TIMEOUT", f"request exceeded {self.request_timeout:g} s"))
            elif r.pending < MAX_PENDING_CHUNKS:  # a slow consumer is skipped: others go on
                batch.append(r)
        if not batch:
            time.sleep(0.002)
            return
        try:
            chunks = step(self.tts, [r.utt for r in batch])  # a row that fails alone gets `utt.error`; the rest go on
        except Exception as e:  # noqa: BLE001 - a failure outside any one row: every request in the step
            for r in batch:
                self._drop(r)
                self._fail(r, e)
            return
        if all(c is None for c in chunks) and all(getattr(r.utt, "waiting", False) for r in batch):
            time.sleep(0.002)  # every request waits for its streamed text
        for r, chunk in zip(batch, chunks):
            if r.utt.error is not None:
                self._drop(r)
                self._fail(r, r.utt.error)
                continue
            if chunk is not None:
                r.frames += chunk.codes.shape[0]
                r.pending += 1
                self._post(r, ("audio", chunk.audio.numpy()))
            if r.utt.done:
                self._drop(r)
                self._post(r, ("done", {"frames": r.frames, "warnings": list(r.utt.warnings)}))

    def _drop(self, r: Request) -> None:
        if r in self._active:
            self._active.remove(r)

    def _fail(self, r: Request, e: Exception) -> None:
        name = type(e).__name__
        if name == "OutOfMemoryError":
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass
            self._post(r, ("error", "GPU_OUT_OF_MEMORY", "out of GPU memory while generating"))
            return
        code = getattr(e, "code", None)
        if name == "VoiceError" and code == "NOT_FOUND":
            self._post(r, ("error", "VOICE_NOT_FOUND", e.message))
            return
        if isinstance(e, ValueError) and "language" in str(e):
            self._post(r, ("error", "UNSUPPORTED_FORMAT", str(e)))
            return
        if isinstance(e, ValueError) and str(e).startswith("seed"):
            self._post(r, ("error", "INVALID_MESSAGE", str(e)))
            return
        if isinstance(e, ValueError) and "text" in str(e):
            self._post(r, ("error", "INVALID_TEXT", str(e)))
            return
        detail = getattr(e, "message", None) or str(e) or name
        traceback.print_exception(type(e), e, e.__traceback__)  # an internal failure: the operator needs the trace
        self._post(r, ("error", "SYNTHESIS_ERROR", redact(f"synthesis failed: {detail}")[:500]))

    @staticmethod
    def _post(r: Request, item) -> None:
        try:
            r.loop.call_soon_threadsafe(r.deliver, item)
        except RuntimeError:  # the session's loop is closed: nothing to deliver to
            pass
