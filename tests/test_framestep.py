"""One decode loop: the frame step's tensor functions and the stop rules are `framestep`'s, the
same objects on the eager path (`FrameGenerator`) and the fixed-shape / CUDA-graph path
(`StaticBatch`); no decode module computes a piece of the step on its own; and the one per-piece
driver (`batch.Utterance` / `step`) gives `generate`, `stream` and `stream_text` the same codes
and warnings."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

import qwen3tts
from qwen3tts import framestep, generator, static_batch
from qwen3tts.generator import FrameGenerator, GenerationSettings, GenState

PKG = Path(qwen3tts.__file__).resolve().parent
DECODE_MODULES = ["generator.py", "static_batch.py", "cuda_graph.py", "batch.py", "textfeed.py", "pipeline.py", "server/engine.py"]
# what only the frame step computes: the talker's head and logit rules, the frame embedding, the code predictor
STEP_ONLY = {"process_talker_logits", "codec_head", "frame_embed", "small_to_mtp_projection", "lm_head"}


def test_both_paths_use_the_same_step_functions():
    assert FrameGenerator.check_stop is framestep.stop_rule
    for name in ("code_predictor_frame", "frame_input", "pick_c0"):
        assert getattr(static_batch, name) is getattr(framestep, name), name
        assert getattr(generator, name) is getattr(framestep, name), name


def test_no_decode_module_writes_the_step_again():
    for rel in DECODE_MODULES:
        tree = ast.parse((PKG / rel).read_text(encoding="utf-8"))
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not used & STEP_ONLY, (rel, used & STEP_ONLY)
        # the stop rules: only framestep compares a session's counters with its limits, or c0 with EOS
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                names = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                stop = "eos_id" in names or (names & {"n_generated", "frames"} and names & {"max_new_tokens", "frame_ceiling"})
                assert not stop, (rel, node.lineno)


def _state(n_generated=3, frames=2, max_new_tokens=10, frame_ceiling=None):
    st = GenState(cache=None, prompt=None, settings=GenerationSettings(max_new_tokens=max_new_tokens, frame_ceiling=frame_ceiling),
                  generator=torch.Generator(), seen=torch.zeros(1, 4, dtype=torch.bool))
    st.n_generated, st.frames = n_generated, frames
    return st


def test_stop_rules():
    st = _state()
    assert not framestep.stop_rule(st, 5, eos_id=7) and not st.done
    st = _state()
    assert framestep.stop_rule(st, 7, eos_id=7) and st.done and st.stopped_by_eos and not st.hit_ceiling
    st = _state(n_generated=10)  # the 10th c0 picked: it gets no frame
    assert framestep.stop_rule(st, 5, eos_id=7) and st.done and not st.stopped_by_eos and not st.hit_ceiling
    st = _state(frames=4, frame_ceiling=4)
    assert framestep.stop_rule(st, 5, eos_id=7) and st.done and st.hit_ceiling and not st.stopped_by_eos
    st = _state(n_generated=10, frames=4, frame_ceiling=4)  # EOS first, then max_new_tokens, then the ceiling
    assert framestep.stop_rule(st, 7, eos_id=7) and st.stopped_by_eos and not st.hit_ceiling


def test_one_driver_for_generate_stream_and_stream_text(tiny_tts):
    tts = tiny_tts
    text = "Hello there. This is a second sentence."
    kw = dict(language="English", seed=11, max_new_tokens=4)
    tts.piece_budget, budget = 16, tts.piece_budget  # several pieces
    try:
        frames = []
        got = tts.generate(text, on_frame=frames.append, **kw)
        streamed = torch.cat([c.codes for c in tts.stream(text, **kw)])
        warned = list(tts.last_warnings)
        texted = torch.cat([c.codes for c in tts.stream_text([text[:9], text[9:]], **kw)])
    finally:
        tts.piece_budget = budget
    assert got.codes.shape[0] >= 2 and frames == list(range(1, got.codes.shape[0] + 1))
    assert torch.equal(got.codes, streamed) and torch.equal(got.codes, texted)
    assert len(got.warnings) >= 2 and got.warnings == warned == tts.last_warnings  # one per piece
    assert all("max_new_tokens=4" in w for w in got.warnings) and not got.stopped_by_eos
