"""The fixed-shape batched frame step (`qwen3tts.static_batch`), run eagerly on CPU: sessions in
bucketed, padded static rows give exactly the codes `FrameGenerator` gives each of them alone
(greedy and seeded sampling), whoever they share the batch with, whenever they join or leave,
and when some rows sit out a step; the per-row pick equals the one-session pick; the model picks
this path on CUDA (and when forced), the eager one otherwise."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_MODEL, max_abs
from qwen3tts import Qwen3TTS, options
from qwen3tts.batch import Utterance, step
from qwen3tts.cuda_graph import CodecBatch
from qwen3tts.sampling import RowSampling, SamplingParams, pick_static, pick_with_noise
from qwen3tts.static_batch import BUCKETS, StaticBatch, bucket, use_graphs

TEXTS = ["Hello there, how are you today?", "A second, different sentence to speak.", "Short one.",
         "The fourth session joins late and says this.", "Five sessions need a bucket of eight rows.",
         "Number six is long enough to stay after the others have left the batch."]


@pytest.fixture(scope="module")
def tts(tiny_tts):
    return tiny_tts


@pytest.fixture(scope="module")
def voices(tts, tiny_icl_voice, expected):
    xvec = tts.create_voice_prompt((expected["ref.wav"].numpy(), 24000), x_vector_only=True)
    return [tiny_icl_voice, xvec, None, tiny_icl_voice, None, xvec]


def _requests(voices, sample: bool):
    reqs = []
    for i, text in enumerate(TEXTS):
        kw = dict(language="English" if i != 2 else "auto", voice=voices[i], max_new_tokens=[9, 14, 6, 11, 8, 24][i],
                  frames_per_chunk=[1, 2, 1, 3, 1, 2][i])
        if sample:
            kw.update(seed=100 + i, temperature=[0.9, 0.7, 1.0, 0.9, 1.2, 0.8][i], top_k=[50, 20, 50, 0, 7, 50][i])
            if i == 4:
                kw.update(top_p=0.8, subtalker_top_p=0.9, subtalker_top_k=11)
            if i == 5:
                kw.update(subtalker_dosample=False)  # sampled c0, greedy sub-codes
        else:
            kw.update(do_sample=False, subtalker_dosample=False)
        if i in (1, 4):
            kw["repetition_penalty"] = 1.3
        reqs.append((text, kw))
    return reqs


def _attach(tts, capacity: int, graphs: bool):
    tts.generator.static = StaticBatch(tts.generator, capacity=capacity, graphs=graphs)
    tts.codec_batch = CodecBatch(tts.speech_tokenizer, graphs=graphs)
    return tts.generator.static


def _detach(tts):
    tts.generator.static = tts.codec_batch = None


def _alone(tts, text, kw):
    assert tts.generator.static is None and tts.codec_batch is None
    chunks = list(tts.stream(text, **kw))
    return torch.cat([c.codes for c in chunks]), torch.cat([c.audio for c in chunks])


def _batched(tts, reqs, joins, skip):
    """All requests through `step`; request i joins at step joins[i]; at the steps in skip[i]
    request i sits out (a slow consumer). Returns per request (codes, audio), and per step the
    number of live sessions and the static rows in use."""
    utts = [None] * len(reqs)
    got = [[] for _ in reqs]
    sizes, rows = [], []
    for t in range(300):
        for i, (text, kw) in enumerate(reqs):
            if utts[i] is None and t >= joins[i]:
                utts[i] = Utterance(tts, text, **kw)
        live = [u for i, u in enumerate(utts) if u is not None and not u.done and t not in skip.get(i, ())]
        if all(u is not None and u.done for u in utts):
            break
        sizes.append(len(live))
        for u, c in zip(live, step(tts, live)):
            if c is not None:
                got[utts.index(u)].append(c)
        rows.append((len(tts.generator.static.owner), tts.generator.static.rows))
    return [(torch.cat([c.codes for c in g]), torch.cat([c.audio for c in g])) for g in got], sizes, rows


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_static_batch_equals_alone(tts, voices, sample):
    reqs = _requests(voices, sample)
    alone = [_alone(tts, text, kw) for text, kw in reqs]
    sb = _attach(tts, 256, graphs=False)
    try:
        batched, sizes, rows = _batched(tts, reqs, joins=[0, 0, 2, 5, 6, 9], skip={1: (3, 4), 5: (12,)})
    finally:
        _detach(tts)
    assert max(sizes) >= 5  # five or more sessions really ran together (a bucket of 8: padded rows)
    assert max(r for _, r in rows) == 8 and all(n <= r for n, r in rows)
    assert rows[-1][0] <= 1  # sessions left: their rows were freed and refilled
    assert not sb.graphs and not sb._eager  # every session ran in the static rows
    for i, ((got_c, got_a), (want_c, want_a)) in enumerate(zip(batched, alone)):
        assert got_c.shape[0] >= 1
        assert torch.equal(got_c, want_c), f"session {i}"
        # frame-by-frame streaming decode vs chunks of 1-3 frames: equal up to float32 rounding
        assert max_abs(got_a, want_a) < 2e-5, f"session {i}"


def test_too_long_runs_eagerly_beside_the_batch(tts):
    """A session whose prompt + frame budget does not fit the static rows runs eagerly in the
    same call; both equal their runs alone."""
    kw = dict(do_sample=False, subtalker_dosample=False, language="English")
    reqs = [("Short and static.", dict(kw, max_new_tokens=5)), ("This one does not fit the rows.", dict(kw, max_new_tokens=200))]
    alone = [_alone(tts, t, k) for t, k in reqs]
    sb = _attach(tts, 64, graphs=False)
    try:
        batched, _, _ = _batched(tts, reqs, joins=[0, 0], skip={})
        assert len(sb._eager) == 1  # the long one ran eagerly
        sb.next_frames([])
        assert len(sb._eager) == 0 and len(sb.owner) == 0  # both left
    finally:
        _detach(tts)
    for (gc, ga), (wc, wa) in zip(batched, alone):
        assert torch.equal(gc, wc) and max_abs(ga, wa) < 2e-5


def test_codec_batch_equals_streaming_decoders(tts):
    """Streams decoded one frame at a time through the codec rows (joining, sitting out steps,
    moving between buckets and rows) equal their own `StreamingDecoder`s."""
    tok = tts.speech_tokenizer
    g = torch.Generator().manual_seed(9)
    codes = [torch.randint(0, 64, (12, 16), generator=g) for _ in range(5)]
    plan = [[0], [0, 1], [0, 1, 2], [1, 2], [0, 1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 2, 3, 4], [4], [3, 4], [0, 1, 2, 3, 4], [2, 0]]
    cb = CodecBatch(tok, graphs=False)
    decs, refs = [tok.streaming_decoder() for _ in codes], [tok.streaming_decoder() for _ in codes]
    got, want = [[] for _ in codes], [[] for _ in codes]
    n = [0] * len(codes)
    for step_ids in plan:
        wavs = cb.push([decs[i] for i in step_ids], [codes[i][n[i]] for i in step_ids])
        for i, w in zip(step_ids, wavs):
            got[i].append(w)
            want[i].append(refs[i].push(codes[i][n[i] : n[i] + 1]))
            n[i] += 1
    assert sorted(cb.slabs) == [1, 2, 4, 8]
    for i in range(len(codes)):
        assert decs[i].frames == refs[i].frames == n[i]
        assert max_abs(torch.cat(got[i]), torch.cat(want[i])) < 1e-6
    # a stream that left the rows still decodes alone, from its own state
    w = decs[1].push(codes[1][n[1] : n[1] + 2])
    assert max_abs(w, refs[1].push(codes[1][n[1] : n[1] + 2])) < 1e-6


def test_capture_failure_falls_back_with_one_warning(tts):
    """Asked to capture where it cannot (no CUDA here), both steps warn once, together, and run
    eagerly with the same results."""
    import warnings

    from qwen3tts import static_batch

    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=6, language="English")
    want = _alone(tts, "Capture fails here.", kw)
    sb = _attach(tts, 128, graphs=True)
    static_batch._WARNED.clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = torch.cat([c.codes for c in tts.stream("Capture fails here.", **kw)])
            again = torch.cat([c.codes for c in tts.stream("Capture fails here.", **kw)])
        cb = tts.codec_batch
    finally:
        _detach(tts)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "CUDA graph capture of the" in msgs[0] and "running eagerly" in msgs[0]
    assert not sb.graphs and not cb.graphs and sb.warned and cb.warned
    assert torch.equal(got, want[0]) and torch.equal(again, want[0])


def test_pick_static_equals_one_row_pick():
    """Every row of the fixed-shape pick equals `pick_with_noise` on that row alone with its own
    settings (temperature, top-k on/off, top-p on/off, greedy) and noise."""
    g = torch.Generator().manual_seed(5)
    V = 300
    params = [SamplingParams(), SamplingParams(temperature=0.7, top_k=20), SamplingParams(do_sample=False),
              SamplingParams(temperature=1.0, top_k=0, top_p=0.85), SamplingParams(temperature=1.3, top_k=3, top_p=0.5),
              SamplingParams(top_k=V)]
    rs = RowSampling.empty(len(params), "cpu")
    for b, p in enumerate(params):
        rs.set_row(b, p, V)
    for trial in range(20):
        logits = torch.randn(len(params), V, generator=g) * (1 + trial % 4)
        logits[:, :5] = float("-inf")
        noise = torch.empty(len(params), V).exponential_(1.0, generator=g)
        got = pick_static(logits, rs, noise, k_max=50, use_top_p=True)
        want = torch.cat([pick_with_noise(logits[b : b + 1], p, noise[b : b + 1]) for b, p in enumerate(params)])
        assert torch.equal(got, want)
        if trial == 0:  # top-p off for the batch when no row uses it
            sub = rs.rows(3)
            assert torch.equal(pick_static(logits[:3], sub, noise[:3], k_max=20, use_top_p=False), want[:3])


def test_buckets():
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33)] == [1, 2, 4, 4, 8, 8, 16, 16, 32, 32, 64]
    assert BUCKETS == (1, 2, 4, 8, 16, 32)


def test_use_graphs_switch(monkeypatch):
    monkeypatch.delenv("QWEN3TTS_CUDA_GRAPHS", raising=False)
    options.reload()
    assert use_graphs("cuda") and use_graphs(torch.device("cuda", 0), "auto")
    assert not use_graphs("cpu") and not use_graphs("cuda", "off") and use_graphs("cpu", "on")
    monkeypatch.setenv("QWEN3TTS_CUDA_GRAPHS", "0")
    options.reload()
    assert not use_graphs("cuda")
    monkeypatch.setenv("QWEN3TTS_CUDA_GRAPHS", "on")
    options.reload()
    assert use_graphs("cpu")
    with pytest.raises(ValueError, match="on, off or auto"):
        use_graphs("cuda", "sometimes")


def test_model_picks_the_static_path(monkeypatch):
    """`from_pretrained` attaches the static batch where `use_graphs` says so (auto: CUDA) and
    `stream` / `generate` then run through it, equal to the eager path."""
    monkeypatch.delenv("QWEN3TTS_CUDA_GRAPHS", raising=False)
    options.reload()
    tts = Qwen3TTS.from_pretrained(TINY_MODEL)
    assert tts.generator.static is None  # auto on CPU: eager
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=8, language="English")
    want = tts.generate("Which path runs this?", **kw)
    assert tts.set_cuda_graphs("on") and isinstance(tts.generator.static, StaticBatch)
    assert not tts.generator.static.graphs  # captured only on CUDA: eager here
    assert isinstance(tts.codec_batch, CodecBatch) and not tts.codec_batch.graphs
    got = tts.generate("Which path runs this?", **kw)
    assert torch.equal(got.codes, want.codes) and max_abs(got.audio, want.audio) < 1e-5
    streamed = torch.cat([c.codes for c in tts.stream("Which path runs this?", **kw)])
    assert torch.equal(streamed, want.codes)
    monkeypatch.setenv("QWEN3TTS_CUDA_GRAPHS", "on")
    options.reload()
    assert isinstance(Qwen3TTS.from_pretrained(TINY_MODEL).generator.static, StaticBatch)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _on_gpu(sample: bool, graphs: bool):
    """Four staggered requests (one sits out a step) on the GPU (tiny model, float32) through
    the static batch, captured or eager."""
    tts = Qwen3TTS.from_pretrained(TINY_MODEL, device="cuda", cuda_graphs="off")
    reqs = _requests([None] * 6, sample)[:4]
    _attach(tts, 256, graphs)
    out, _, _ = _batched(tts, reqs, joins=[0, 0, 2, 5], skip={1: (3,)})
    return tts, reqs, out


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_graph_replay_equals_eager_on_gpu(sample):
    _, _, eager = _on_gpu(sample, graphs=False)
    tts, _, graphed = _on_gpu(sample, graphs=True)
    assert tts.generator.static.graphs and tts.generator.static._graphs  # really captured
    for (ec, ea), (gc, ga) in zip(eager, graphed):
        assert torch.equal(ec, gc) and torch.equal(ea, ga)  # bit for bit: the same kernels, replayed


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_batched_equals_alone_on_gpu(sample):
    tts, reqs, batched = _on_gpu(sample, graphs=True)
    for (text, kw), (bc, _) in zip(reqs, batched):
        alone = torch.cat([c.codes for c in tts.stream(text, **kw)])  # the same session in a bucket of one
        assert torch.equal(alone, bc)
