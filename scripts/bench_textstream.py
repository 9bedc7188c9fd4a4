"""`scripts/bench.py --text-stream WORDS_PER_S[,...]`: speech from text written at a given rate.

A writer thread feeds a paragraph word by word at WORDS_PER_S (the first word at t = 0, as an
LLM's first token) into `Qwen3TTS.stream_text` (x-vector voice, 1-frame chunks) and we report:

* first audio from the first word, next to the first audio of the whole first sentence given at
  once (`stream`), the issue's yardstick (streamed <= whole + 80 ms);
* generation stalls: times the talker waited at a frame boundary for the next text token after
  its first frame (count, total seconds; `TextUtterance.stats`);
* with an ICL voice (one run): its first audio, which waits until the text fills the span of
  the reference codes;
* playback gaps: a player that starts at the first chunk and plays 80 ms per frame; a chunk that
  arrives after its due time is a gap (count, total seconds) — what a listener hears.

Random weights never learn to stop, so each piece is given exactly enough frames to read all
its text (`max_new_tokens` = its tokens + 2): the run ends when the paragraph has been read.
"""

from __future__ import annotations

import statistics
import threading
import time

PARAGRAPH = (
    "Sure, here is a quick overview. The weather today is mild, with light winds from the west and a high "
    "of eighteen degrees. Tomorrow looks brighter: expect sunshine in the morning, a few clouds after lunch, "
    "and a cool, clear evening that is perfect for a walk. If you are planning to travel, leave a little "
    "early, because the roads near the city center will be busy."
)


def _words(text):
    ws = text.split(" ")
    return [w + (" " if i < len(ws) - 1 else "") for i, w in enumerate(ws)]


def one_run(tts, voice, words_per_s: float, kw: dict, lookahead: int = 0) -> dict:
    from qwen3tts.textsplit import split_text

    pieces = split_text(PARAGRAPH, tts.piece_budget)
    max_new = max(len(tts.text_tokenizer.encode(p)) for p in pieces) + 2
    words = _words(PARAGRAPH)
    t0 = [0.0]
    started = threading.Event()

    def writer():
        started.wait()
        for i, w in enumerate(words):
            delay = t0[0] + i / words_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield w

    it = tts.stream_text(writer(), voice=voice, language="English", frames_per_chunk=1, lookahead=lookahead,
                         max_new_tokens=max_new, **kw)
    arrivals = []
    t0[0] = time.perf_counter()
    started.set()
    for _ in it:
        arrivals.append(time.perf_counter() - t0[0])
    stats = tts.last_text_stats
    gaps, gap_s, shift = 0, 0.0, 0.0
    for k, t in enumerate(arrivals):
        due = arrivals[0] + k * 0.08 + shift
        if t > due + 1e-3:
            gaps, gap_s, shift = gaps + 1, gap_s + (t - due), shift + (t - due)
    return {"first_audio_ms": arrivals[0] * 1000, "stalls": stats["stalls"], "stall_s": stats["stall_s"], "gaps": gaps,
            "gap_s": gap_s, "frames": len(arrivals), "text_s": (len(words) - 1) / words_per_s, "wall_s": arrivals[-1]}


def whole_sentence_first_audio(tts, voice, kw) -> float:
    first = PARAGRAPH.split(". ")[0] + "."
    t = time.perf_counter()
    it = tts.stream(first, language="English", voice=voice, frames_per_chunk=1, max_new_tokens=50, **kw)
    next(it)
    dt = time.perf_counter() - t
    it.close()
    return dt * 1000


def run(tts, voice, rates: list[float], kw: dict, lookahead: int = 0, repeats: int = 1, icl=None) -> dict:
    one_run(tts, voice, 1000.0, kw)  # warm-up (shapes of a streamed piece)
    whole = statistics.median(whole_sentence_first_audio(tts, voice, kw) for _ in range(3))
    out = {"text_stream_words": len(_words(PARAGRAPH)), "text_stream_lookahead": lookahead,
           "first_audio_whole_sentence_ms": round(whole, 1), "text_stream": {}}
    for r in rates:
        runs = [one_run(tts, voice, r, kw, lookahead) for _ in range(repeats)]
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        out["text_stream"][f"{r:g}"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in med.items()}
    if icl is not None:  # ICL starts once the text fills the reference span (textfeed.py)
        r = 15.0 if 15.0 in rates else rates[0]
        x = one_run(tts, icl, r, kw, lookahead)
        out["text_stream_icl"] = {"words_per_s": r, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in x.items()}}
    return out
