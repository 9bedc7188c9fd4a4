"""Batched sessions: `batch.step` advances many utterances together (one GEMM per weight for all
of them, per-session attention, positions, caches, settings and random streams); each session's
codes and audio equal what it gets alone, whoever it is batched with and whenever it joins or
leaves."""

from __future__ import annotations

import pytest
import torch

from conftest import max_abs
from qwen3tts.batch import Utterance, step
from qwen3tts.codec.tokenizer import push_many

TEXTS = ["Hello there, how are you today?", "A second, different sentence to speak.", "Short one.",
         "The fourth session joins late and says this."]


@pytest.fixture(scope="module")
def tts(tiny_tts):
    return tiny_tts


@pytest.fixture(scope="module")
def voices(tts, tiny_icl_voice, expected):
    xvec = tts.create_voice_prompt((expected["ref.wav"].numpy(), 24000), x_vector_only=True)
    return [tiny_icl_voice, xvec, None, tiny_icl_voice]


def _requests(voices, sample: bool):
    """Four requests with different texts, voices, lengths, chunking and settings."""
    reqs = []
    for i, text in enumerate(TEXTS):
        kw = dict(language="English" if i != 2 else "auto", voice=voices[i], max_new_tokens=[9, 14, 6, 11][i],
                  frames_per_chunk=[1, 2, 1, 3][i])
        if sample:
            kw.update(seed=100 + i, temperature=[0.9, 0.7, 1.0, 0.9][i], top_k=[50, 20, 50, 50][i])
        else:
            kw.update(do_sample=False, subtalker_dosample=False)
        if i == 1:
            kw["repetition_penalty"] = 1.3  # per-session penalty inside one batch
        reqs.append((text, kw))
    return reqs


def _alone(tts, text, kw):
    chunks = list(tts.stream(text, **kw))
    return torch.cat([c.codes for c in chunks]), torch.cat([c.audio for c in chunks]), [c.codes.shape[0] for c in chunks]


def _batched(tts, reqs, joins):
    """Run all requests through `step`; request i joins at step joins[i]."""
    utts: list[Utterance | None] = [None] * len(reqs)
    got = [[] for _ in reqs]
    sizes = []
    t = 0
    while t < 200:
        for i, (text, kw) in enumerate(reqs):
            if utts[i] is None and t >= joins[i]:
                utts[i] = Utterance(tts, text, **kw)
        live = [u for u in utts if u is not None and not u.done]
        if not live and all(u is not None for u in utts):
            break
        sizes.append(len(live))
        for u, c in zip(live, step(tts, live)):
            if c is not None:
                got[utts.index(u)].append(c)
        t += 1
    out = []
    for g in got:
        out.append((torch.cat([c.codes for c in g]), torch.cat([c.audio for c in g]), [c.codes.shape[0] for c in g]))
    return out, sizes


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_batched_equals_alone(tts, voices, sample):
    reqs = _requests(voices, sample)
    alone = [_alone(tts, text, kw) for text, kw in reqs]
    batched, sizes = _batched(tts, reqs, joins=[0, 0, 2, 5])
    assert max(sizes) == 4 and min(sizes) >= 1  # all four really ran together at some step
    for (codes_a, wav_a, chunks_a), (codes_b, wav_b, chunks_b), (_, kw) in zip(alone, batched, reqs):
        n = codes_a.shape[0]
        assert n == kw["max_new_tokens"] - 1 if not sample else 1 <= n <= kw["max_new_tokens"] - 1  # greedy: cut by the limit
        assert torch.equal(codes_a, codes_b)
        assert chunks_a == chunks_b  # same chunking (frames_per_chunk, remainder at the end)
        assert wav_a.shape == wav_b.shape and max_abs(wav_a, wav_b) < 1e-5
    # sessions really differ (not one session copied four times)
    assert not torch.equal(alone[0][0][:5], alone[3][0][:5]) or alone[0][1].shape != alone[3][1].shape


def test_batched_long_text_pieces(tts, voices):
    """A multi-piece utterance batched with a short one: pieces start (prefill) inside `step`."""
    tts.piece_budget, old = 40, tts.piece_budget
    try:
        long_text = "First piece of the text is here. And the second piece follows it. Then a third."
        kw = dict(language="English", voice=voices[0], do_sample=False, subtalker_dosample=False, max_new_tokens=5)
        reqs = [(long_text, kw), (TEXTS[2], dict(kw, voice=voices[1], max_new_tokens=7))]
        alone = [_alone(tts, t, k) for t, k in reqs]
        batched, _ = _batched(tts, reqs, joins=[0, 1])
        assert alone[0][0].shape[0] == 3 * 4  # three pieces of 4 frames
        for a, b in zip(alone, batched):
            assert torch.equal(a[0], b[0]) and max_abs(a[1], b[1]) < 1e-5
    finally:
        tts.piece_budget = old


def test_push_many_equals_separate_pushes(tts):
    tok = tts.speech_tokenizer
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 64, (n, 16), generator=g) for n in (9, 5, 12)]
    ref = [tok.decode(s) for s in seqs]
    decs = [tok.streaming_decoder() for _ in seqs]
    outs = [[] for _ in seqs]
    for t in range(14):  # staggered starts, different chunk sizes, rows at different positions
        act = [i for i in range(3) if t >= (3 if i == 1 else 0) and decs[i].frames < len(seqs[i])]
        take = [seqs[i][decs[i].frames : decs[i].frames + (2 if i == 2 else 1)] for i in act]
        for i, w in zip(act, push_many([decs[i] for i in act], take)):
            outs[i].append(w)
    for i in range(3):
        assert decs[i].frames == len(seqs[i])
        assert max_abs(torch.cat(outs[i]), ref[i]) < 1e-5


def test_push_many_resident_rows_stay_exact(tts):
    """Rows stay resident in the batched state between pushes of the same group (no copies);
    pushing a member alone, regrouping in another order, and resetting one still equal the
    separate decodes."""
    from qwen3tts.codec.layers import StreamState

    tok = tts.speech_tokenizer
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 64, (12, 16), generator=g) for _ in range(3)]
    ref = [tok.decode(s) for s in seqs]
    decs = [tok.streaming_decoder() for _ in seqs]
    outs = [[] for _ in seqs]
    plan = [[0, 1, 2], [0, 1, 2], [0, 1, 2], [1], [2, 0], [2, 0], [0, 1, 2], [0, 1, 2], [1, 2], [0], [0, 1, 2]]
    batched = []
    for group in plan:
        if len(group) > 1:
            batched.append(StreamState.stack([decs[i].state for i in group]))
            batched[-1].unstack([decs[i].state for i in group])
        for i, w in zip(group, push_many([decs[i] for i in group], [seqs[i][decs[i].frames : decs[i].frames + 1] for i in group])):
            outs[i].append(w)
    # resident while the group repeats; a new state after another grouping ([1] alone keeps the rows)
    assert batched[0] is batched[1] is batched[2] and batched[3] is batched[4] is not batched[2]
    assert batched[5] is batched[6] is not batched[0] and batched[7] is not batched[6]
    for i in range(3):
        n = decs[i].frames
        assert n == sum(i in grp for grp in plan)
        assert max_abs(torch.cat(outs[i]), ref[i][: n * tok.samples_per_frame]) < 1e-5
    decs[1].reset()  # a reset zeroes that row only; it then decodes from the start again
    got = push_many([decs[i] for i in (0, 1)], [seqs[0][decs[0].frames : decs[0].frames + 1], seqs[1][:2]])
    assert max_abs(got[1], ref[1][: 2 * tok.samples_per_frame]) < 1e-5
    assert max_abs(got[0], ref[0][decs[0].frames * 1920 - 1920 : decs[0].frames * 1920]) < 1e-5


def test_utterance_validates_at_construction(tts):
    with pytest.raises(ValueError, match="text is empty"):
        Utterance(tts, "   ")
    with pytest.raises(ValueError, match="frames_per_chunk"):
        Utterance(tts, "Hi.", frames_per_chunk=0)
    with pytest.raises(ValueError):
        Utterance(tts, "Hi.", language="Klingon")
