"""Long text: splitting at sentence / clause boundaries, piece-by-piece generation joined
seamlessly, and the runaway frame ceiling."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import TINY_MODEL, max_abs
from qwen3tts import Qwen3TTS
from qwen3tts.textsplit import split_text

PARA = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
    "How vexingly quick daft zebras jump; the five boxing wizards jump quickly, and then they rest. "
    "Sphinx of black quartz, judge my vow? "
)


def _norm(s):
    return re.sub(r"\s+", "", s)


def test_split_budget_and_roundtrip():
    text = PARA * 8
    pieces = split_text(text, 200)
    assert len(pieces) > 5 and all(0 < len(p) <= 200 for p in pieces)
    assert _norm("".join(pieces)) == _norm(text)
    # sentences are not cut in the middle when they fit
    assert all(p.endswith((".", "!", "?", ";", ",")) for p in pieces)


def test_split_cjk_and_long_clauses():
    zh = "今天天气很好。我们去公园散步吧！你觉得怎么样？" * 10
    pieces = split_text(zh, 30)
    assert all(len(p) <= 30 for p in pieces) and _norm("".join(pieces)) == _norm(zh)
    assert all(p.endswith(("。", "！", "？")) for p in pieces)
    long_clause = "word " * 100  # no punctuation at all: split at spaces
    pieces = split_text(long_clause, 50)
    assert all(len(p) <= 50 for p in pieces) and _norm("".join(pieces)) == _norm(long_clause)
    assert split_text("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]
    assert split_text("Short.", 200) == ["Short."] and split_text("   ", 200) == []


@pytest.fixture(scope="module")
def tts():
    return Qwen3TTS.from_pretrained(TINY_MODEL)


@pytest.fixture(scope="module")
def voice(tts, expected, expected_info):
    return tts.create_voice_prompt((expected["ref.wav"].numpy(), 24000), ref_text=expected_info["texts"]["ref"]["text"])


def test_long_text_stream_equals_generate(tts, voice):
    text = (PARA * 12)[:2000]
    assert len(text) == 2000
    kw = dict(language="English", voice=voice, do_sample=False, subtalker_dosample=False, max_new_tokens=12)
    n_pieces = len(split_text(text, tts.piece_budget))
    assert n_pieces >= 10
    starts = []
    orig = tts.generator.start

    def counting_start(*a, **k):
        starts.append(1)
        return orig(*a, **k)

    tts.generator.start = counting_start
    try:
        chunk_starts = []
        chunks = []
        for c in tts.stream(text, frames_per_chunk=2, **kw):
            chunk_starts.append(len(starts))
            chunks.append(c)
    finally:
        tts.generator.start = orig
    # the stream flows: the first audio comes after the first piece's prefill only, and every
    # later piece costs exactly one more prefill before its audio continues
    assert chunk_starts[0] == 1 and chunk_starts[-1] == n_pieces
    assert all(b - a in (0, 1) for a, b in zip(chunk_starts, chunk_starts[1:]))
    # frames are contiguous across pieces
    assert [c.first_frame for c in chunks] == list(range(0, 2 * len(chunks), 2))[: len(chunks)]
    out = tts.generate(text, **kw)
    assert n_pieces <= out.codes.shape[0] <= n_pieces * 11  # max_new_tokens 12 per piece -> <= 11 frames each
    assert torch.equal(torch.cat([c.codes for c in chunks]), out.codes)
    audio = torch.cat([c.audio for c in chunks])
    off = out.audio.shape[0] - audio.shape[0]
    assert off in (0, 1) and max_abs(audio, out.audio[off:]) < 2e-5
    # each piece that did not reach EOS within its 12 tokens says so
    assert 0 < len(out.warnings) <= n_pieces and all("max_new_tokens=12" in w for w in out.warnings)


def test_frame_ceiling_stops_runaway(tts, voice, monkeypatch):
    import qwen3tts.pipeline as pl

    monkeypatch.setattr(pl, "FRAME_CEILING_BASE", 0)
    monkeypatch.setattr(pl, "FRAME_CEILING_PER_TOKEN", 1)
    text = "One two three four five."
    n_tok = len(tts.text_tokenizer.encode(text))
    out = tts.generate(text, language="English", voice=voice, do_sample=False, subtalker_dosample=False, max_new_tokens=200)
    assert out.codes.shape[0] == n_tok and not out.stopped_by_eos
    assert "no end of speech after" in out.warnings[0]
