"""Speaking text while it is being written: `TextUtterance` (a `batch.Utterance` whose text comes
from a `TextStream`) and `stream_text` (its iterator / async-iterator drivers).

The talker reads its text one token per frame (talker.md §2.7, the streaming dual track): the
prefill holds the first text token (x-vector and no-reference voices) and every later token is
added to the input of one decode step (`TalkerPrompt.trailing`), then `tts_eos`, then `tts_pad`.
So a piece starts as soon as its first token is final, and its `trailing` grows as tokens
become final (`textstream.IncrementalTokenizer`); when the next step needs a token that is not
there yet and the piece is not complete, the utterance sits out the batched step at its frame
boundary (`ready()` is False; the others go on) and goes on when text arrives. The model sees
exactly the inputs of the whole text, so the audio is the same samples (a stall is a gap in
time, not inserted audio).

* ICL voices: the prefill aligns the reference transcript + text with the reference codes
  (`build_prompt`); the text that overlaps the reference span must be in the prefill, so an ICL
  piece starts once its known tokens fill the span (or the piece is complete), then streams the
  rest as above. Same samples as the whole text; first audio waits for about
  `ref_frames + 1 - ref_text_tokens` text tokens.
* Non-streaming layout (CustomVoice / VoiceDesign default): all text is in the prefill, so each
  piece starts when it is complete (sentence by sentence).
* Long text: the `TextStream` cuts pieces as `split_text` does (sentences packed up to the
  budget); the pieces share the voice, settings and one continuous codec stream, and each has
  the frame ceiling of its tokens (`Qwen3TTS.frame_ceiling`), raised as its tokens arrive.
* `lookahead=N`: the first piece starts only after N of its tokens are known (or it is
  complete): later first audio, fewer stalls with a slow writer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import torch

from .batch import Utterance, piece_settings, step_alone
from .prompt import build_prompt
from .textstream import IncrementalTokenizer, TextStream
from .voice import VoicePrompt


class TextUtterance(Utterance):
    """One request whose text arrives through `text` (a `TextStream`). Arguments as
    `Qwen3TTS.stream_text`; everything but the text is validated here."""

    def __init__(self, tts, text: TextStream, language: str | None = "auto", voice=None, non_streaming_mode: bool | None = None,
                 frames_per_chunk: int = 1, lookahead: int = 0, **kw):
        if frames_per_chunk < 1:
            raise ValueError("frames_per_chunk must be >= 1")
        if not isinstance(lookahead, int) or lookahead < 0:
            raise ValueError("lookahead must be an integer >= 0")
        if not isinstance(text, TextStream):
            raise TypeError("text must be a TextStream")
        voice = tts.resolve_voice(voice)
        if voice is not None and not isinstance(voice, VoicePrompt):
            raise TypeError("voice must be a VoicePrompt (see create_voice_prompt) or None")
        kw = dict(kw)
        speaker, instruct = kw.pop("speaker", None), kw.pop("instruct", None)
        self.settings = tts.settings(**kw)
        self.settings.validate()
        self.nsm = tts._nsm(non_streaming_mode)
        tts._prompt("a", language, voice, self.nsm, speaker, instruct)  # voice / speaker / language checks
        tt = tts.text_tokenizer
        self.spk, self.language = (voice.speaker_embedding if voice is not None else None), language
        if speaker is not None:
            self.spk, self.language = tts._speaker(speaker, language)
        icl = voice is not None and voice.icl
        self.ref_ids = tt.encode(tt.ref_text(voice.ref_text)) if icl else None
        self.ref_codes = voice.ref_codes if icl else None
        self.instruct_ids = tt.encode(tt.instruct_text(instruct)) if instruct else None
        self.head, self.tail = tt.encode("<|im_start|>assistant\n"), tt.encode("<|im_end|>\n<|im_start|>assistant\n")
        # text tokens the prefill takes (None: the whole piece)
        self.need = None if self.nsm else (max(1, self.ref_codes.shape[0] + 1 - len(self.ref_ids[3:-2])) if icl else 1)
        self.ceiling = tts.frame_ceiling()
        self.lookahead = lookahead
        self.stream = text
        self._begin(tts, voice, frames_per_chunk)
        self.tok: IncrementalTokenizer | None = None  # the current piece's tokens
        self.fed = 0  # of them, in the prefill or `trailing`
        self.final = False  # the current piece's trailing is complete (ends with tts_eos)
        self.waiting = False  # the last `ready()` found no text to go on with
        self.stalls, self.stall_s, self._wait_since = 0, 0.0, None
        self.first_frame_at: float | None = None

    # ------------------------------------------------------------------ text
    def _sync(self) -> bool:
        """Bring the current piece's tokens up to date; False while the piece does not exist."""
        with self.stream.lock:
            view = self.stream.piece_view(self.piece)
        if view is None:
            return False
        if self.tok is None:
            self.tok = IncrementalTokenizer(self.tts.text_tokenizer)
        self.tok.update(*view)
        return True

    @property
    def generated_all(self) -> bool:
        s = self.stream
        with s.lock:  # a consistent view while a writer thread ends the stream
            return self.state is None and s.ended and (s.cancelled or (s.complete and self.piece >= len(s.pieces)))

    def _ensure_state(self) -> None:
        if self.state is not None or not self._sync():
            return
        ids, final = self.tok.ids, self.tok.final
        if not final and (self.need is None or len(ids) < max(self.need, self.lookahead if self.piece == 0 else 0)):
            return
        tts = self.tts
        p = build_prompt(tts.talker, tts.config, self.head + ids + self.tail, self.language, speaker=self.spk, ref_ids=self.ref_ids,
                         ref_codes=self.ref_codes, non_streaming=self.nsm, instruct_ids=self.instruct_ids)
        if not final:
            p.trailing = p.trailing[:-1]  # drop tts_eos: more text follows
        self.state = tts.generator.start(p, piece_settings(self.settings, self.piece, self._ceiling(len(ids))))
        self.fed, self.final = len(ids), final

    def _ceiling(self, n_tokens: int) -> int:
        return self.ceiling[0] + self.ceiling[1] * n_tokens

    @torch.inference_mode()
    def _feed(self) -> None:
        """Append the current piece's newly final tokens (and tts_eos at its end) to `trailing`."""
        if self.final or not self._sync():
            return
        new, st = self.tok.ids[self.fed :], self.state
        if not new and not self.tok.final:
            return
        talker, cfg = self.tts.talker, self.tts.config
        rows = [st.prompt.trailing]
        if new:
            rows.append(talker.text_embed(torch.tensor(new, device=self.tts.device)))
        if self.tok.final:  # tts_eos exactly as build_prompt computes it
            ids = torch.tensor([cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id], device=self.tts.device)
            rows.append(talker.text_embed(ids)[1:2])
        st.prompt.trailing = torch.cat(rows)  # (T, hidden)
        st.settings = replace(st.settings, frame_ceiling=self._ceiling(len(self.tok.ids)))
        self.fed, self.final = len(self.tok.ids), self.tok.final

    # ------------------------------------------------------------------ batch.step hooks
    def ready(self) -> bool:
        """Can this utterance make a frame now? (False: waiting for text.)"""
        if self.stream.cancelled:
            self.done = True
            return False
        st = self.state
        ok = False
        if st is not None:
            self._feed()
            ok = st.pending is None or self.final or st.frames - 1 < st.prompt.trailing.shape[0]
        self.waiting = not ok and not self.generated_all
        now = time.monotonic()
        if ok:
            if self._wait_since is not None:
                self.stall_s += now - self._wait_since
                self._wait_since = None
            if self.first_frame_at is None:
                self.first_frame_at = now
        elif self.waiting and self._wait_since is None and self.first_frame_at is not None:
            self._wait_since, self.stalls = now, self.stalls + 1
        return ok

    def stats(self) -> dict:
        """Waiting for text after the first frame: how often and how long (s)."""
        extra = time.monotonic() - self._wait_since if self._wait_since is not None else 0.0
        return {"stalls": self.stalls, "stall_s": self.stall_s + extra}

    def _piece_ended(self) -> None:
        super()._piece_ended()
        self.tok, self.fed, self.final = None, 0, False


# ---------------------------------------------------------------------- drivers
def stream_text(tts, chunks, language="auto", voice=None, non_streaming_mode=None, frames_per_chunk=1, split=True, lookahead=0, **kw):
    """See `Qwen3TTS.stream_text`. Validates now; returns a generator, or an async generator
    when `chunks` is an async iterable."""
    ts = chunks if isinstance(chunks, TextStream) else TextStream(tts.piece_budget, split=split)
    u = TextUtterance(tts, ts, language, voice, non_streaming_mode, frames_per_chunk, lookahead, **kw)
    if hasattr(chunks, "__aiter__"):
        return _run_async(tts, u, ts, chunks)
    if isinstance(chunks, str):
        raise TypeError("chunks must be an iterable of text pieces (a str is not: use stream() or [text])")
    return _run_sync(tts, u, ts, None if chunks is ts else iter(chunks))


def _run_sync(tts, u: TextUtterance, ts: TextStream, it):
    errors: list[BaseException] = []
    if it is not None:
        def feed():
            try:
                for c in it:
                    ts.push(c)
                ts.end()
            except BaseException as e:  # noqa: BLE001 - raised in the consumer
                if not ts.cancelled:
                    errors.append(e)
                ts.cancel()

        threading.Thread(target=feed, name="qwen3tts-text-feed", daemon=True).start()
    try:
        while not u.done:
            v = ts.version
            chunk = step_alone(tts, u)
            if errors:
                raise errors[0]
            if chunk is not None:
                yield chunk
            elif u.waiting:
                ts.wait(v, 0.05)
    finally:
        if it is not None and not ts.ended:
            ts.cancel()  # stops the feeder at its next piece
        tts.last_warnings, tts.last_text_stats = u.warnings, u.stats()


async def _run_async(tts, u: TextUtterance, ts: TextStream, chunks):
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []

    async def feed():
        try:
            async for c in chunks:
                ts.push(c)
            ts.end()
        except Exception as e:  # noqa: BLE001 - raised in the consumer
            if not ts.cancelled:
                errors.append(e)
            ts.cancel()

    task = asyncio.ensure_future(feed())
    try:
        while not u.done:
            v = ts.version
            chunk = await loop.run_in_executor(None, step_alone, tts, u)
            if errors:
                raise errors[0]
            if chunk is not None:
                yield chunk
            elif u.waiting:
                await loop.run_in_executor(None, ts.wait, v, 0.05)
    finally:
        task.cancel()
        if not ts.ended:
            ts.cancel()
        tts.last_warnings, tts.last_text_stats = u.warnings, u.stats()
