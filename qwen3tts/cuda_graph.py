"""CUDA-graph decoding, one session at a time: `StaticDecoder` (the batched fixed-shape frame
step of `static_batch.StaticBatch` for a batch of one, kept as a small single-session API for
benchmarks and tests) and `CodecGraph` (the streaming codec step for chunks of n frames, captured
once and replayed), with `CodecBatch` (the codec step of many streams in fixed shapes); they
capture with `static_batch.capture`, the warm-up-then-capture helper of every graph.

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

import threading

import torch

from .generator import FrameGenerator, GenerationSettings
from .prompt import TalkerPrompt
from .static_batch import StaticBatch, bucket, capture, capture_failed  # noqa: F401 (capture: public here too)


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


class _Slab:
    """One bucket's static codec rows: state (b rows, device positions), codes in, audio out."""

    def __init__(self, tok, b: int):
        self.state = tok.decoder.init_state(b)
        self.state.pos = torch.zeros(b, dtype=torch.long, device=tok.device)  # one device position per row
        self.codes = torch.zeros(b, tok.num_quantizers, 1, dtype=torch.long, device=tok.device)
        self.out = None
        self.graph = None
        self.views = [{k: [t[i : i + 1] for t in ts] for k, ts in self.state.bufs.items()} for i in range(b)]
        self.resident: list = [None] * b  # row -> the StreamState living there (weakref)


class CodecBatch:
    """The streaming codec step for one frame of many streams at once, in fixed shapes: per
    batch-size bucket, static rows of codec state (every stream's conv histories, attention ring
    and position), captured once as a CUDA graph (CUDA) and replayed; eager elsewhere.

    A stream's `StreamingDecoder` state lives in its row (its tensors become views of the row,
    as `StreamState.stack` does), so while the same streams run together nothing is copied; a
    stream that moves (another bucket, another row) is copied over, and a stream whose row is
    needed by others (or padded) is moved out to tensors of its own first. Equals
    `push_many` / `StreamingDecoder.push` of one frame each (the same `CodecDecoder.step`)."""

    def __init__(self, tok, graphs: bool | None = None):
        self.tok = tok
        self.graphs = (tok.device.type == "cuda") if graphs is None else graphs
        self.slabs: dict[int, _Slab] = {}
        self._pool = None
        self._lock = threading.Lock()  # one step at a time (the rows are shared by every caller)
        self.warned = False

    def _place(self, slab: _Slab, decoders) -> None:
        import weakref

        want = [d.state for d in decoders]
        for i, r in enumerate(slab.resident):  # move out the streams whose row is taken or padded
            st = r() if r is not None else None
            if st is not None and st.bufs is slab.views[i] and (i >= len(want) or want[i] is not st):
                st.bufs = {k: [t.clone() for t in ts] for k, ts in st.bufs.items()}
            if st is None or st.bufs is not slab.views[i] or i >= len(want) or want[i] is not st:
                slab.resident[i] = None
        for i, st in enumerate(want):
            if st.bufs is not slab.views[i]:  # copy it into row i and live there
                for k, ts in slab.views[i].items():
                    for t, src in zip(ts, st.bufs[k]):
                        t.copy_(src)
                st.bufs = slab.views[i]
                st.__dict__.pop("_group", None)  # no longer a row of an eager `stack`
                slab.resident[i] = weakref.ref(st)

    def _step(self, slab: _Slab) -> None:
        wav = self.tok.decoder.step(slab.codes, slab.state)  # (b, 1920)
        if slab.out is None:
            slab.out = torch.empty_like(wav)
        slab.out.copy_(wav)

    def push(self, decoders: list, frames: list) -> list[torch.Tensor]:
        """One frame (16,) per streaming decoder -> its (1920,) float32 samples on CPU."""
        with self._lock, torch.inference_mode():
            return self._push(decoders, frames)

    def _push(self, decoders: list, frames: list) -> list[torch.Tensor]:
        n = len(decoders)
        if n == 0:
            return []
        b = bucket(n)
        slab = self.slabs.get(b)
        if slab is None:
            slab = self.slabs[b] = _Slab(self.tok, b)
        self._place(slab, decoders)
        c = torch.zeros(b, self.tok.num_quantizers, dtype=torch.long)
        c[:n] = torch.stack([torch.as_tensor(f).reshape(-1) for f in frames]).long()
        self.tok._check_range(c[:n])
        pos = torch.zeros(b, dtype=torch.long)
        pos[:n] = torch.tensor([d.state.pos for d in decoders])
        slab.codes[:, :, 0].copy_(c)
        slab.state.pos.copy_(pos)
        if self.graphs and slab.graph is None:
            try:
                slab.graph = capture(lambda: self._step(slab), lambda: _snapshot_rows(slab.state), lambda snap: _restore_rows(slab.state, snap),
                                     self._pool_handle())
            except Exception as e:  # noqa: BLE001 - any capture failure: eager from now on
                self.graphs = False
                self.warned = True
                capture_failed("codec step", e)
        if self.graphs and slab.graph is not None:
            slab.graph.replay()
        else:
            self._step(slab)
        host = slab.out[:n].to("cpu", torch.float32, copy=True)  # the one host sync
        for d in decoders:
            d.state.pos += 1
        return list(host)

    def _pool_handle(self):
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool


def _snapshot_rows(state):
    """`StreamState.snapshot` for a state with one device position per row."""
    return {k: [t.clone() for t in ts] for k, ts in state.bufs.items()}, state.pos.clone()


def _restore_rows(state, snap) -> None:
    bufs, pos = snap
    for k, ts in state.bufs.items():
        for t, src in zip(ts, bufs[k]):
            t.copy_(src)
    state.pos.copy_(pos)
