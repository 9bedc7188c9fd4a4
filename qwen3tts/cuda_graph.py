"""CUDA-graph decoding, one session at a time: `StaticDecoder` (the batched fixed-shape frame
step of `static_batch.StaticBatch` for a batch of one, kept as a small single-session API for
benchmarks and tests) and `CodecGraph` (the streaming codec step for chunks of n frames, captured
once and replayed), plus `capture`, the warm-up-then-capture helper.

There is no counterpart in the official package (its loop is eager Python, one kernel launch per
op, ~2,000 launches per frame). The approach follows gpt-fast / faster-qwen3-tts: every tensor a
step touches is a static buffer of fixed shape; positions live on the device; attention runs
over all cache slots under a position mask. On a CPU (or with `graphs=False`) the same static
functions run without capture; the tests check that they reproduce `FrameGenerator` exactly on
CPU, and (on a GPU) that replay == eager.

    dec = StaticDecoder(tts.talker, eos_id, capacity=1024)
    dec.start(prompt, settings)            # eager prefill, copied into the static row
    while (frame := dec.next_frame()) is not None: ...
"""

from __future__ import annotations

import torch

from .generator import FrameGenerator, GenerationSettings
from .prompt import TalkerPrompt
from .static_batch import StaticBatch


class StaticDecoder:
    """One session through a `StaticBatch` of one row (same step, same capture)."""

    def __init__(self, talker, eos_id: int, capacity: int = 1024, graphs: bool | None = None):
        self.gen = FrameGenerator(talker, eos_id)
        self.batch = StaticBatch(self.gen, capacity=capacity, graphs=graphs, max_rows=1)
        self.capacity, self.device = capacity, self.gen.device
        self.state = None

    @property
    def graphs(self) -> bool:
        return self.batch.graphs

    def start(self, prompt: TalkerPrompt, settings: GenerationSettings) -> None:
        """Prefill (`FrameGenerator.start`) and the first c0; the next frame joins the row."""
        settings.validate()
        L = prompt.prefill.shape[0]
        if L + settings.max_new_tokens + 1 > self.capacity:
            raise ValueError(f"prompt ({L}) + max_new_tokens ({settings.max_new_tokens}) exceeds the static cache ({self.capacity})")
        if self.state is not None:
            self.state.done = True  # frees the row at the next frame
        self.state = self.gen.start(prompt, settings)

    def next_frame(self) -> torch.Tensor | None:
        """As `FrameGenerator.next_frame`: the next frame's codes (G,) on CPU, or None."""
        return self.batch.next_frames([self.state])[0]

    @property
    def pos(self) -> int:
        return self.state.pos

    @property
    def stopped_by_eos(self) -> bool:
        return self.state.stopped_by_eos

    @property
    def hit_ceiling(self) -> bool:
        return self.state.hit_ceiling

    @property
    def done(self) -> bool:
        return self.state.done


class CodecGraph:
    """The streaming codec step for chunks of `n` frames, captured once (CUDA) and replayed;
    state (conv histories, attention ring, position) is static and updated in place."""

    def __init__(self, tok, n: int = 1, graphs: bool | None = None):
        self.tok, self.n = tok, n
        self.graphs = (tok.device.type == "cuda") if graphs is None else graphs
        self.state = tok.decoder.init_state(1)
        self.state.pos = torch.zeros(1, dtype=torch.long, device=tok.device)  # device position
        self.codes = torch.zeros(1, tok.num_quantizers, n, dtype=torch.long, device=tok.device)
        self.out = None
        self._graph = None

    def _step(self) -> None:
        wav = self.tok.decoder.step(self.codes, self.state)  # (1, n * 1920)
        if self.out is None:
            self.out = torch.empty_like(wav)
        self.out.copy_(wav)

    @torch.inference_mode()
    def push(self, codes) -> torch.Tensor:
        """codes (n, 16) -> (n * 1920,) float32 on CPU; equals `StreamingDecoder.push`."""
        c = torch.as_tensor(codes).long()
        if c.shape != (self.n, self.tok.num_quantizers):
            raise ValueError(f"this codec graph takes chunks of shape ({self.n}, {self.tok.num_quantizers}), got {tuple(c.shape)}")
        self.tok._check_range(c)
        self.codes.copy_(c.T[None])
        if not self.graphs:
            self._step()
        else:
            if self._graph is None:
                self._graph = capture(self._step, self.state.snapshot, self.state.restore)
            self._graph.replay()
        return self.out[0].to("cpu", torch.float32, copy=True)


def capture(fn, snapshot, restore) -> "torch.cuda.CUDAGraph":
    """Capture `fn` (a step on static buffers) as a CUDA graph: warm up on a side stream
    (allocator, cuBLAS / Triton autotuning), then capture. Warm-up and capture really run the
    step, so the live state is snapshotted first and restored after each run."""
    snap = snapshot()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
            restore(snap)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    restore(snap)
    return g
