"""`Qwen3TTS.stream_text`: text streamed in pieces (inside words too, fast or slow, sync or
async, pushed from another thread) gives the same samples as the whole text; waiting sessions
do not hold up their batch-mates; lookahead; errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from conftest import max_abs
from qwen3tts import TextStream
from qwen3tts.batch import Utterance, step
from qwen3tts.textfeed import TextUtterance

GREEDY = dict(language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=40)
TEXT = "Hello there, it's a test of 42 words. Is this streamed?"


def cut(text, n):
    """Pieces of n characters (so words are cut inside)."""
    return [text[i : i + n] for i in range(0, len(text), n)]


def whole(tts, text, **kw):
    return torch.cat([c.audio for c in tts.stream(text, **kw)])


def streamed(tts, chunks, **kw):
    return torch.cat([c.audio for c in tts.stream_text(chunks, **kw)])


@pytest.fixture(scope="module")
def xvec(tiny_tts, expected):
    return tiny_tts.create_voice_prompt((expected["ref.wav"].numpy(), 24000), x_vector_only=True)


@pytest.mark.parametrize("mode", ["none", "xvector", "icl"])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_streamed_equals_whole(tiny_tts, xvec, tiny_icl_voice, mode, n):
    voice = {"none": None, "xvector": xvec, "icl": tiny_icl_voice}[mode]
    ref = whole(tiny_tts, TEXT, voice=voice, frames_per_chunk=2, **GREEDY)
    got = streamed(tiny_tts, cut(TEXT, n), voice=voice, frames_per_chunk=2, **GREEDY)
    assert ref.shape == got.shape and max_abs(got, ref) <= 1e-5


def slow(pieces, delay):
    for i, p in enumerate(pieces):
        time.sleep(delay * (4 if i % 3 == 2 else 1))
        yield p


def test_slow_text_stalls_but_gives_the_same_samples(tiny_tts, xvec):
    ref = whole(tiny_tts, TEXT, voice=xvec, **GREEDY)
    # a writer slower than the talker: the next word comes only once it waits for it
    ts, words = TextStream(), [w + " " for w in TEXT.split(" ")]
    u = TextUtterance(tiny_tts, ts, voice=xvec, **GREEDY)
    out = []
    while not u.done:
        c = step(tiny_tts, [u])[0]
        out += [c] if c is not None else []
        if u.waiting or u.state is None:
            ts.push(words.pop(0)) if words else ts.end()
    assert u.stats()["stalls"] >= 5 and u.stats()["stall_s"] > 0  # the talker waited for words...
    assert max_abs(torch.cat([c.audio for c in out]), ref) <= 1e-5  # ...and the audio is the same samples
    # the iterator driver with a slow writer (stalls or not, depending on the machine's speed)
    got = streamed(tiny_tts, slow(words_of(TEXT), 0.1), voice=xvec, **GREEDY)
    assert max_abs(got, ref) <= 1e-5 and set(tiny_tts.last_text_stats) == {"stalls", "stall_s"}


def words_of(text):
    return [w + " " for w in text.split(" ")]


def test_long_text_pieces_one_codec_stream(tiny_tts, xvec):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 3 + ["Pack my box with five dozen liquor jugs!"] * 3)
    tiny_tts.piece_budget = 100
    try:
        kw = dict(GREEDY, max_new_tokens=12)
        ref = torch.cat([c.codes for c in tiny_tts.stream(text, voice=xvec, **kw)])
        ref_audio = whole(tiny_tts, text, voice=xvec, **kw)
        chunks = list(tiny_tts.stream_text(cut(text, 5), voice=xvec, **kw))
    finally:
        tiny_tts.piece_budget = 200
    assert torch.equal(torch.cat([c.codes for c in chunks]), ref)
    assert [c.first_frame for c in chunks] == list(range(len(chunks)))
    assert max_abs(torch.cat([c.audio for c in chunks]), ref_audio) <= 1e-5


def test_async_iterable_and_pushed_stream(tiny_tts, xvec):
    ref = whole(tiny_tts, TEXT, voice=xvec, **GREEDY)

    async def agen():
        for p in cut(TEXT, 4):
            await asyncio.sleep(0.01)
            yield p

    async def collect():
        return [c.audio async for c in tiny_tts.stream_text(agen(), voice=xvec, **GREEDY)]

    assert max_abs(torch.cat(asyncio.run(collect())), ref) <= 1e-5
    ts = TextStream()

    def writer():
        for p in cut(TEXT, 6):
            ts.push(p)
            time.sleep(0.02)
        ts.end()

    threading.Thread(target=writer).start()
    assert max_abs(streamed(tiny_tts, ts, voice=xvec, **GREEDY), ref) <= 1e-5


def test_waiting_session_does_not_hold_up_its_batch_mate(tiny_tts, xvec):
    alone = whole(tiny_tts, "Another voice, speaking on.", **GREEDY)
    ts = TextStream()
    ts.push("Hello the")
    u = TextUtterance(tiny_tts, ts, voice=xvec, **GREEDY)
    other = Utterance(tiny_tts, "Another voice, speaking on.", **GREEDY)
    out_u, out_o = [], []
    while not other.done:
        a, b = step(tiny_tts, [u, other])
        out_u += [a] if a is not None else []
        out_o += [b] if b is not None else []
    assert u.waiting and not u.done and 0 < len(out_u) < len(out_o)  # it waits at "the": the other went on
    assert max_abs(torch.cat([c.audio for c in out_o]), alone) <= 1e-5
    ts.end("re, it's a test of 42 words. Is this streamed?")
    while not u.done:
        a = step(tiny_tts, [u])[0]
        out_u += [a] if a is not None else []
    assert max_abs(torch.cat([c.audio for c in out_u]), whole(tiny_tts, TEXT, voice=xvec, **GREEDY)) <= 1e-5


def test_lookahead_holds_tokens_before_starting(tiny_tts):
    ts = TextStream()
    u = TextUtterance(tiny_tts, ts, lookahead=6, **GREEDY)
    ts.push("Hello there, it's")  # 3 final tokens ("Hello", " there", ","; " it's" may go on)
    assert step(tiny_tts, [u]) == [None] and u.state is None and u.waiting
    ts.push(" a test of")  # 7 final tokens: it starts
    chunks = [step(tiny_tts, [u])[0]]
    assert u.state is not None and chunks[0] is not None
    ts.end(" 42 words. Is this streamed?")
    while not u.done:
        c = step(tiny_tts, [u])[0]
        chunks += [c] if c is not None else []
    ref = whole(tiny_tts, TEXT, **GREEDY)
    assert max_abs(torch.cat([c.audio for c in chunks]), ref) <= 1e-5
    assert max_abs(streamed(tiny_tts, cut(TEXT, 2), lookahead=1000, **GREEDY), ref) <= 1e-5  # more than the text: waits for the end


def test_errors(tiny_tts):
    with pytest.raises(TypeError, match="iterable of text pieces"):
        tiny_tts.stream_text("Hello")
    with pytest.raises(ValueError, match="lookahead"):
        tiny_tts.stream_text(["a"], lookahead=-1)
    with pytest.raises(ValueError, match="language"):
        tiny_tts.stream_text(["a"], language="Klingon")
    with pytest.raises(ValueError, match="frames_per_chunk"):
        tiny_tts.stream_text(["a"], frames_per_chunk=0)

    def bad():
        yield "Hello "
        yield 42

    with pytest.raises(TypeError, match="must be str"):
        list(tiny_tts.stream_text(bad(), **GREEDY))
    assert list(tiny_tts.stream_text(["  ", "\n"], **GREEDY)) == []  # no words: no audio


def test_non_streaming_layout_waits_for_whole_pieces(tiny_tts, xvec):
    """non_streaming_mode puts all of a piece's text in the prefill: the piece starts when it is
    complete, and the audio is still the whole text's."""
    text = "First sentence here. And a second one!"
    kw = dict(GREEDY, non_streaming_mode=True, voice=xvec)
    assert max_abs(streamed(tiny_tts, cut(text, 4), **kw), whole(tiny_tts, text, **kw)) <= 1e-5
    ts = TextStream()
    u = TextUtterance(tiny_tts, ts, **kw)
    ts.push("First sentence here. And a sec")
    assert step(tiny_tts, [u]) == [None] and u.state is None and u.waiting  # one piece, not complete yet


def test_failed_step_is_raised_not_swallowed(tiny_tts):
    """`step` keeps a failure to its row (`Utterance.error`); `stream_text`, like `stream`, raises
    it to its caller instead of ending as if the text were spoken."""
    gen = tiny_tts.generator
    calls = {"n": 0}

    def failing(states):
        calls["n"] += 1
        raise RuntimeError("injected frame-step failure")

    gen.next_frames = failing
    try:
        with pytest.raises(RuntimeError, match="injected frame-step failure"):
            list(tiny_tts.stream_text(["Hello ", "there."], do_sample=False, subtalker_dosample=False))
        with pytest.raises(RuntimeError, match="injected frame-step failure"):
            list(tiny_tts.stream("Hello there.", do_sample=False, subtalker_dosample=False))
    finally:
        del gen.next_frames  # back to the class method
    assert calls["n"] == 2
