"""Streamed text: incremental tokenization gives exactly the whole text's ids (real Qwen
vocabulary, both regexes, random splits inside words), and streamed pieces equal split_text."""

from __future__ import annotations

import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3tts import TextTokenizer
from qwen3tts.dev.random_model import PRESETS
from qwen3tts.textsplit import split_text
from qwen3tts.textstream import IncrementalTokenizer, TextStream

ALPHABET = list("abcdefghijk XYZ  \t\n.,!?;:'\"-0123456789") + list("éüßñ你好世界。！？，") + ["😀", "👍🏽", "\u0301", "\u3000", "'s", "'ll", "<|im_end|>"]
FRAGMENTS = ["Hello", " world", ".", " It's", " 42", "   ", "\n\n", " 你好", "。", "😀😀", " e\u0301", "!!", " --", "\t", " I'm", " A", "..."]


@pytest.fixture(scope="module", params=["qwen2", "mistral_fix"])
def tok(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen_tok")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(PRESETS / "qwen_tokenizer" / f, d / f)
    shutil.copy(PRESETS / "0.6b-base" / "tokenizer_config.json", d / "tokenizer_config.json")
    return TextTokenizer.from_pretrained(d, regex=request.param)


def whole_ids(tok, piece):
    return tok.encode(tok.assistant_text(piece))[3:-5]


def feed(ts: TextStream, tok, chunks):
    """Push `chunks`, updating every piece's tokenizer after each push; checks that committed ids
    never change. Returns the pieces' (text, ids)."""
    toks: list[IncrementalTokenizer] = []
    history: list[list[int]] = []

    def sync():
        with ts.lock:
            views = [ts.piece_view(i) for i in range(len(ts.pieces))]
        for i, (text, limit, final) in enumerate(views):
            if i == len(toks):
                toks.append(IncrementalTokenizer(tok))
                history.append([])
            toks[i].update(text, limit, final)
            assert toks[i].ids[: len(history[i])] == history[i]
            history[i] = list(toks[i].ids)

    for c in chunks:
        ts.push(c)
        sync()
    ts.end()
    sync()
    assert ts.complete
    return [(ts.piece_view(i)[0], toks[i].ids) for i in range(len(toks))]


def splits(text, cuts):
    cuts = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


text_st = st.lists(st.one_of(st.sampled_from(ALPHABET), st.sampled_from(FRAGMENTS)), min_size=1, max_size=40).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_st, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_streamed_ids_equal_whole_ids(tok, text, cuts):
    """One piece (split=False): the ids of the streamed text are those of the whole text."""
    pieces = feed(TextStream(split=False), tok, splits(text, cuts))
    if not text.strip():
        assert pieces == []
        return
    assert [p for p, _ in pieces] == [text.strip()]
    assert pieces[0][1] == whole_ids(tok, text.strip())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_st, cuts=st.lists(st.integers(0, 10_000), max_size=30), budget=st.sampled_from([12, 30, 200]))
def test_streamed_pieces_and_ids(tok, text, cuts, budget):
    """Sentence pieces: a short text is one piece (as split_text); every piece's ids equal the
    whole piece's; the pieces cover the text; none exceeds the budget."""
    pieces = feed(TextStream(budget=budget), tok, splits(text, cuts))
    for p, ids in pieces:
        assert ids == whole_ids(tok, p)
        assert p and p == p.strip() and len(re.sub(r"\s+", "", p)) <= budget  # raw whitespace kept (split_text: one joiner)
    assert "".join("".join(p.split()) for p, _ in pieces) == "".join(text.split())
    if len(text.strip()) <= budget:
        assert [p for p, _ in pieces] == split_text(text, budget)


words = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "epsilon", "42", "it's", "you'll", "ok"]), min_size=1, max_size=12)
sentence_st = st.tuples(words, st.sampled_from([".", "!", "?", "...", ".\"", "!)"])).map(lambda t: " ".join(t[0]).capitalize() + t[1])


@settings(max_examples=150, deadline=None)
@given(sents=st.lists(sentence_st, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 10_000), max_size=40),
       budget=st.sampled_from([40, 80, 200]))
def test_streamed_pieces_equal_split_text(sents, cuts, budget):
    """Sentences that fit the budget, separated by one space: the streamed pieces are exactly
    split_text's, however the text is cut (inside words too)."""
    text = " ".join(sents)
    ts = TextStream(budget=budget)
    for c in splits(text, cuts):
        ts.push(c)
    ts.end()
    assert [ts.piece_view(i)[0] for i in range(len(ts.pieces))] == split_text(text, budget)


def test_long_sentence_is_cut_at_a_space_and_limits():
    ts = TextStream(budget=20)
    for w in ("word " * 12).split(" "):
        ts.push(w + " ")
    ts.end()
    got = [ts.piece_view(i)[0] for i in range(len(ts.pieces))]
    assert all(len(p) <= 20 for p in got) and " ".join(got).split() == ["word"] * 12
    ts = TextStream(max_chars=10)
    ts.push("0123456789")
    with pytest.raises(ValueError, match="longer than 10"):
        ts.push("x")
    with pytest.raises(TypeError):
        ts.push(b"x")
    with pytest.raises(ValueError, match="NUL"):
        ts.push("a\x00")
    with pytest.raises(ValueError, match="surrogate"):
        ts.push("\ud800")
    ts.end()
    with pytest.raises(ValueError, match="ended"):
        ts.push("more")
