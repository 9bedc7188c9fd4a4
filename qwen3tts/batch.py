"""Speaking many requests at once: `Utterance` (one request's state: text pieces, generation
state of the current piece, streaming codec state, chunk buffer) and `step` (one frame for a set
of utterances, batched through the talker, code predictor and codec).

    u1 = Utterance(tts, "Hello!", voice=v1)
    u2 = Utterance(tts, "Bonjour !", language="French")
    while not (u1.done and u2.done):
        for u, chunk in zip((u1, u2), step(tts, [u1, u2])):
            if chunk is not None:
                play(u, chunk.audio)

`Qwen3TTS.generate`, `stream` and `stream_text` are the batch of one (`step_alone`): the one
per-piece loop; the server's engine calls `step` on all its active requests, so B sessions cost
about one talker/predictor weight read per frame instead of B (decode is memory-bound).
Utterances join and leave between steps. There is no counterpart in the official package (its
`generate` takes one padded batch at a time, all starting together).

One utterance's failure is its own: a piece that fails to start (its prefill), a batched frame
step that raises (the states are rolled back and each is retried alone), or codes its decoder
refuses, end that utterance with `error` set (`done`, no chunk) and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .codec.tokenizer import push_many


@dataclass
class AudioChunk:
    """Audio of `n` consecutive frames of one utterance, starting at frame `first_frame`."""

    audio: torch.Tensor  # (n * 1920,) float32
    codes: torch.Tensor  # (n, 16) int64
    first_frame: int
    sample_rate: int = 24000


class Utterance:
    """One request being spoken. Arguments are those of `Qwen3TTS.stream`; everything is
    validated here (before the first frame), so a bad request fails at construction.
    `decode=False` (what `Qwen3TTS.generate` drives): no streaming codec, no chunks; the frames
    stay in `buf` for one decode of the whole. `trace=True` records a one-piece text's model
    trace (`GenState.trace`, kept in `traced`)."""

    def __init__(self, tts, text: str, language: str | None = "auto", voice=None, non_streaming_mode: bool | None = None,
                 frames_per_chunk: int = 1, split: bool = True, *, decode: bool = True, trace: bool = False, **kw):
        if frames_per_chunk < 1:
            raise ValueError("frames_per_chunk must be >= 1")
        voice = tts.resolve_voice(voice)
        self.plan = tts._plan(text, language, voice, tts._nsm(non_streaming_mode), split, kw)
        self._begin(tts, voice, frames_per_chunk, decode)
        self.trace = trace and len(self.plan.prompts) == 1

    def _begin(self, tts, voice, frames_per_chunk: int, decode: bool = True) -> None:
        """The state every utterance starts from (`textfeed.TextUtterance` too): no piece
        started, the streaming codec at the voice's primed state."""
        self.tts, self.voice, self.frames_per_chunk = tts, voice, frames_per_chunk
        self.decoder = tts.speech_tokenizer.streaming_decoder() if decode else None
        if decode and voice is not None and voice.icl:
            tts._prime(self.decoder, voice)
        self.piece = 0  # index of the piece being generated
        self.state = None  # GenState of that piece, None until started
        self.trace, self.traced = False, None  # record the model trace; the traced piece's GenState
        self.buf: list[torch.Tensor] = []  # frames not yet handed out in a chunk
        self.audio: list[torch.Tensor] = []  # their samples, when decoded frame by frame (`tts.codec_batch`)
        self.frames = 0  # frames handed out in chunks
        self.warnings: list[str] = []
        self.stopped_by_eos = True
        self.done = False
        self.error: Exception | None = None  # set (and `done`) when this utterance failed in a step

    def _failed(self, e: Exception) -> None:
        self.error, self.done, self.state, self.buf = e, True, None, []

    @property
    def generated_all(self) -> bool:
        """Every piece has been generated (frames may still wait in `buf`)."""
        return self.state is None and self.piece >= len(self.plan.prompts)

    def ready(self) -> bool:
        """Can this utterance make a frame in this step? (`textfeed.TextUtterance` may wait for text.)"""
        return self.state is not None

    def _ensure_state(self) -> None:
        if self.state is None and self.piece < len(self.plan.prompts):
            self.state = self.tts.generator.start(self.plan.prompts[self.piece], self.plan.piece_settings(self.piece), trace=self.trace)

    def _piece_ended(self) -> None:
        st = self.state
        self.stopped_by_eos &= st.stopped_by_eos
        w = piece_warning(self.piece, st, self.tts.frame_ceiling())
        if w:
            self.warnings.append(w)
        if st.trace is not None:
            self.traced = st
        self.piece += 1
        self.state = None

    def _take(self, final: bool) -> torch.Tensor | None:
        n = self.frames_per_chunk
        if len(self.buf) >= n or (final and self.buf):
            codes, self.buf = torch.stack(self.buf[:n]), self.buf[n:]
            return codes
        return None


def step(tts, utts: list[Utterance]) -> list:
    """Advance every utterance that is not done by one frame (a piece that just ended moves on
    to the next piece, whose prefill runs here). Returns, per utterance, an `AudioChunk` when
    one is complete (every `frames_per_chunk` frames, and the remainder at the end), else None.
    An utterance is `done` after the step that returned its last chunk. An utterance that fails
    gets `error` (and `done`) and returns None; the others are not affected."""
    live = [u for u in utts if not u.done]
    for u in live:
        try:
            u._ensure_state()  # a new piece's prefill: per utterance
        except Exception as e:  # noqa: BLE001 - this utterance's failure only
            u._failed(e)
    live = [u for u in live if u.error is None]
    gen = [u for u in live if u.ready()]
    frames = _next_frames(tts.generator, gen)
    for u, f in zip(gen, frames):
        if u.error is not None:
            continue
        if f is None:
            u._piece_ended()
        else:
            u.buf.append(f)
    live = [u for u in live if u.error is None]
    codec = getattr(tts, "codec_batch", None)
    if codec is not None:  # the fixed-shape path: every new frame decoded now, all in one (captured) codec step
        new = [(u, f) for u, f in zip(gen, frames) if f is not None and u.error is None and u.decoder is not None]
        for (u, _), wav in zip(new, codec.push([u.decoder for u, _ in new], [f for _, f in new])):
            u.audio.append(wav)
    ready, codes = [], []
    for u in live:
        final = u.generated_all
        if u.decoder is None:  # decode=False: the frames stay in buf
            u.done = final
            continue
        c = u._take(final)
        if c is None:
            if final:
                u.done = True
            continue
        try:
            u.decoder.tok._check_range(c)  # the one row-specific check of the decoder, before any state changes
        except Exception as e:  # noqa: BLE001
            u._failed(e)
            continue
        ready.append(u)
        codes.append(c)
    out = {}
    if ready:
        if codec is not None:
            wavs = [torch.cat(u.audio[: c.shape[0]]) for u, c in zip(ready, codes)]
            for u, c in zip(ready, codes):
                del u.audio[: c.shape[0]]
        else:
            wavs = push_many([u.decoder for u in ready], codes)
        for u, c, wav in zip(ready, codes, wavs):
            out[id(u)] = AudioChunk(wav, c, u.frames, tts.sample_rate)
            u.frames += c.shape[0]
            if u.generated_all and not u.buf:
                u.done = True
    return [out.get(id(u)) for u in utts]


def step_alone(tts, u: Utterance):
    """`step` for one utterance on its own, for the single-request drivers (`Qwen3TTS.generate`,
    `stream`, `stream_text`): its chunk or None, its failure raised."""
    with torch.inference_mode():
        chunk = step(tts, [u])[0]
    if u.error is not None:  # `step` keeps a failure to its row; alone, the caller gets it raised
        raise u.error
    return chunk


def piece_settings(settings, i: int, frame_ceiling: int):
    """The `GenerationSettings` of piece i of a request: its frame ceiling, and the request's
    seed + i (each piece its own random stream; None stays None)."""
    return replace(settings, frame_ceiling=frame_ceiling, seed=None if settings.seed is None else settings.seed + i)


def piece_warning(i: int, st, ceiling: tuple[int, int]) -> str | None:
    """The warning for piece i whose generation (`GenState` st) ended without EOS: cut at its
    frame ceiling (`ceiling`: `Qwen3TTS.frame_ceiling()`) or at max_new_tokens."""
    s = st.settings
    if st.hit_ceiling:
        return f"piece {i + 1}: no end of speech after {s.frame_ceiling} frames ({ceiling[1]} per text token + {ceiling[0]}); cut there"
    if not st.stopped_by_eos:
        return f"piece {i + 1}: no end of speech within max_new_tokens={s.max_new_tokens}; cut there"
    return None


def _next_frames(generator, gen: list[Utterance]) -> list:
    """`generator.next_frames` for the utterances' states, batched; if the batched step raises,
    every state is rolled back and stepped alone, so only the ones that fail alone fail."""
    if not gen:
        return []
    states = [u.state for u in gen]
    if len(states) == 1:
        try:
            return generator.next_frames(states)
        except Exception as e:  # noqa: BLE001
            gen[0]._failed(e)
            return [None]
    snaps = [st.snapshot() for st in states]
    try:
        return generator.next_frames(states)
    except Exception:  # noqa: BLE001 - find the row(s) at fault: replay each alone
        for st, snap in zip(states, snaps):
            st.restore(snap)
    out = []
    for u, st in zip(gen, states):
        try:
            out.append(generator.next_frames([st])[0])
        except Exception as e:  # noqa: BLE001
            u._failed(e)
            out.append(None)
    return out
