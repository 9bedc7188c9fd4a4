"""The fixed-shape batched frame step: what the engine runs on a GPU, captured as CUDA graphs.

`StaticBatch` runs `FrameGenerator.next_frames` for sessions held in the rows of static
buffers: one batched talker KV cache (rows x capacity slots), the device position, counters,
repetition-penalty set, hidden, c0 and per-row sampling settings of every row. One frame for
the rows of a batch-size bucket (1, 2, 4, 8, 16, 32) is one function of those buffers:

    talker step for the rows whose last frame is fed now (others masked: their state is kept)
      -> c0 picked (repetition penalty, EOS / control-id rules, per-row sampling)
    the 15 code-predictor steps with their picks for every live row -> frame_out rows

built from the eager path's own functions (`framestep`: `frame_input`, `pick_c0`,
`code_predictor_frame`; the decoder layers' `forward_static`; the per-row pick is
`sampling.pick_static`), with prefill (`FrameGenerator.start`), text input
(`FrameGenerator.text_input`) and the stop rules (`framestep.stop_rule`) shared with it too.
On CUDA each bucket's function is captured once as a CUDA graph and replayed; elsewhere (or
when capture fails: one warning) it runs eagerly. The hot step has no host syncs and allocates
nothing data-dependent: positions are device tensors, attention reads every slot under a
`slot <= position` mask, the sampling noise is drawn from each session's own generator into
static buffers before the replay (in the eager draw order, so a seeded session gives the same
codes either way). The one host sync is the copy of the frame rows (c0 included) when they are
handed out; the code predictor runs for every live row speculatively and a row that stopped
(EOS) discards its frame.

Sessions join (their prefill cache is copied into a free row) and leave (their row is refilled
by the last occupied row) at frame boundaries; rows not in a call (a skipped slow consumer) are
masked and keep their state. Rows grow by buckets as sessions join (graphs are recaptured
for the new buffers). A session whose prompt plus frame budget does not fit `capacity`, or that
records a trace, runs on the eager path beside the batch.
"""

from __future__ import annotations

import threading
import warnings
import weakref

import torch

from . import options
from .config import cuda_graphs_option
from .framestep import code_predictor_frame, frame_input, pick_c0
from .generator import FrameGenerator, GenState
from .sampling import RowSampling, pick_static

BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_GRAPHS = 24  # captured (bucket, top-k width, top-p) variants kept at once
DEFAULT_CAPACITY = 1024  # talker positions per row: prompt + frames of one text piece
_PENDING = True  # GenState.pending of a static row: its last frame is in frame_out


def use_graphs(device, option=None) -> bool:
    """Whether `Qwen3TTS` runs its frames through `StaticBatch`: `option` "on"/"off"/"auto" (or
    True/False/None); None reads `QWEN3TTS_CUDA_GRAPHS` (default auto). auto: on CUDA devices."""
    o = cuda_graphs_option(options.current().cuda_graphs if option is None else option)
    return o == "on" or (o == "auto" and torch.device(device).type == "cuda")


_WARNED: set = set()


def capture_failed(what: str, e: Exception) -> None:
    """The one warning when a capture fails (then that step runs eagerly): once per process."""
    if not _WARNED:
        _WARNED.add(what)
        warnings.warn(f"CUDA graph capture of the {what} failed ({type(e).__name__}: {e}); running eagerly", RuntimeWarning, stacklevel=3)


def bucket(n: int) -> int:
    """The smallest batch-size bucket holding n rows (multiples of 32 above 32)."""
    for b in BUCKETS:
        if n <= b:
            return b
    return -(-n // BUCKETS[-1]) * BUCKETS[-1]


class _Cache:
    """Rows [0, n) of a batched KV cache, as a `KVCache`-like view (no copy)."""

    def __init__(self, k, v, max_len):
        self.k, self.v, self.max_len = k, v, max_len


class StaticBatch:
    def __init__(self, gen: FrameGenerator, capacity: int = DEFAULT_CAPACITY, graphs: bool | None = None, max_rows: int | None = None):
        self.gen, self.talker, self.eos_id = gen, gen.talker, gen.eos_id
        self.device, self.dtype, self.capacity = gen.device, gen.dtype, capacity
        self.graphs = (self.device.type == "cuda") if graphs is None else graphs
        self.max_rows = max_rows
        cfg = self.talker.cfg
        self.V, self.Vc, self.G, self.H = cfg.vocab_size, cfg.code_predictor.vocab_size, cfg.num_code_groups, cfg.hidden_size
        self.slots = torch.arange(max(capacity, self.G), device=self.device)
        self.rows = 0  # allocated rows
        self.owner: list = []  # row -> weakref to its GenState
        self.host_pos: list[int] = []  # row -> position (host mirror)
        self._ids: dict[int, int] = {}  # id(GenState) -> row
        self._eager: dict[int, object] = {}  # id -> weakref of states that run eagerly
        self._graphs: dict = {}
        self._pool = None
        self._cp: dict[int, object] = {}
        self._keep: dict = {}  # RoPE tables the graphs read by address
        self._lock = threading.Lock()  # one frame at a time (the rows are shared by every caller)
        self.warned = False

    # ------------------------------------------------------------------ buffers
    def _alloc(self, rows: int) -> None:
        """(Re)allocate every per-row buffer for `rows` rows, keeping the occupied rows."""
        dev, dt, n = self.device, self.dtype, len(self.owner)
        old = self.__dict__.get("buf")
        cache = self.talker.model.new_cache(rows, self.capacity)
        buf = dict(
            pos=torch.zeros(rows, dtype=torch.long, device=dev), n_gen=torch.zeros(rows, dtype=torch.long, device=dev),
            seen=torch.zeros(rows, self.V, dtype=torch.bool, device=dev), hidden=torch.zeros(rows, 1, self.H, device=dev, dtype=dt),
            c0=torch.zeros(rows, dtype=torch.long, device=dev), frame_out=torch.zeros(rows, self.G, dtype=torch.long, device=dev),
            text_in=torch.zeros(rows, self.H, device=dev, dtype=dt), masks=torch.zeros(2, rows, dtype=torch.bool, device=dev),
            penalty=torch.ones(rows, 1, device=dev), min_new=torch.zeros(rows, dtype=torch.long, device=dev),
            noise_c0=torch.ones(rows, self.V, device=dev), noise_cp=torch.ones(self.G - 1, rows, self.Vc, device=dev),
        )
        samp = (RowSampling.empty(rows, dev), RowSampling.empty(rows, dev))
        if old is not None and n:
            for a, b in zip(cache.k + cache.v, self.cache.k + self.cache.v):
                a[:n].copy_(b[:n])
            for k, t in buf.items():
                (t[:, :n] if k in ("masks", "noise_cp") else t[:n]).copy_(old[k][:, :n] if k in ("masks", "noise_cp") else old[k][:n])
            for new, prev in zip(samp, self.samp):
                for a, b in zip(new.tensors(), prev.tensors()):
                    a[:n].copy_(b[:n])
        self.cache, self.buf, self.samp, self.rows = cache, buf, samp, rows
        self._graphs.clear()  # captured on the old buffers

    def _cp_cache(self, b: int):
        if b not in self._cp:
            self._cp[b] = self.talker.code_predictor.model.new_cache(b, self.G)
        return self._cp[b]

    # ------------------------------------------------------------------ the step (fixed shapes)
    def _frame(self, b: int, k_max: tuple[int, int], top_p: tuple[bool, bool]) -> None:
        """One frame for rows [0, b): masks[0] = rows fed their last frame, masks[1] = live rows."""
        t, B = self.talker, self.buf
        feed, live = B["masks"][0, :b], B["masks"][1, :b]
        pos, c0_old, hid_old, seen = B["pos"][:b], B["c0"][:b], B["hidden"][:b], B["seen"][:b]
        x = frame_input(t, B["frame_out"][:b], B["text_in"][:b])  # (b, H)
        mask = (self.slots[None, : self.capacity] <= pos[:, None])[:, None, None]  # (b, 1, 1, S)
        cache = _Cache([k[:b] for k in self.cache.k], [v[:b] for v in self.cache.v], self.capacity)
        h = t.model.forward_static(x[:, None], cache, pos, mask)  # (b, 1, H)
        top = self.samp[0].rows(b)
        _, c0 = pick_c0(t, h, seen, B["n_gen"][:b], self.gen.suppress, self.eos_id, B["penalty"][:b], B["min_new"][:b],
                        lambda lx: pick_static(lx, top, B["noise_c0"][:b], k_max[0], top_p[0]))  # (b,)
        c0 = torch.where(feed, c0, c0_old)
        seen.scatter_(1, c0[:, None], seen.gather(1, c0[:, None]) | feed[:, None])
        hid_old.copy_(torch.where(feed[:, None, None], h, hid_old))
        c0_old.copy_(c0)
        B["n_gen"][:b].add_(feed)
        pos.add_(feed)
        sub, noise = self.samp[1].rows(b), B["noise_cp"][:, :b]
        frame = code_predictor_frame(t, hid_old, c0, self._cp_cache(b), self.slots,
                                     lambda j, lg: pick_static(lg, sub, noise[j], k_max[1], top_p[1]))  # (b, G)
        fo = B["frame_out"][:b]
        fo.copy_(torch.where(live[:, None], frame, fo))

    def _run(self, b: int) -> None:
        states = [s for s in (r() for r in self.owner) if s is not None]
        k_max = (min(max([s.settings.talker.top_k for s in states] + [0]), self.V - 1),
                 min(max([s.settings.subtalker.top_k for s in states] + [0]), self.Vc - 1))
        top_p = (any(s.settings.talker.top_p < 1 for s in states), any(s.settings.subtalker.top_p < 1 for s in states))
        key = (b, k_max, top_p)
        if not self.graphs:
            self._frame(b, k_max, top_p)
            return
        g = self._graphs.get(key)
        if g is None:
            if len(self._graphs) >= MAX_GRAPHS:  # many setting combinations seen: start over
                self._graphs.clear()
            try:
                g = self._capture(lambda: self._frame(b, k_max, top_p))
            except Exception as e:  # noqa: BLE001 - any capture failure: eager from now on
                self.graphs = False
                self.warned = True
                capture_failed("frame step", e)
                self._frame(b, k_max, top_p)
                return
            self._graphs[key] = g
        g.replay()

    def _capture(self, fn):
        """`capture` with every row masked meanwhile, so the warm-up and capture runs change no
        row's state (they only write keys at each row's next position, which its next real step
        overwrites before reading)."""
        masks = self.buf["masks"]
        saved = masks.clone()
        masks.zero_()
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            g = capture(fn, lambda: None, lambda snap: None, self._pool)
            # the graph reads the cached RoPE tables by address: keep them alive
            for t in (self.talker.model._rope, self.talker.code_predictor.model._rope):
                self._keep[id(t)] = t
            return g
        finally:
            masks.copy_(saved)

    # ------------------------------------------------------------------ sessions
    def eligible(self, st: GenState) -> bool:
        s = st.settings
        frames = s.max_new_tokens if s.frame_ceiling is None else min(s.max_new_tokens, s.frame_ceiling + 1)
        return st.trace is None and st.pos + frames + 1 <= self.capacity and st.cache is not None

    def _join(self, st: GenState) -> None:
        n = len(self.owner)
        if self.max_rows is not None and n >= self.max_rows:
            raise RuntimeError("static batch full")
        if n >= self.rows:
            self._alloc(bucket(n + 1))
        B, L = self.buf, st.pos
        for a, src in zip(self.cache.k + self.cache.v, st.cache.k + st.cache.v):
            a[n, :, :L].copy_(src[0, :, :L])
        B["pos"][n] = L
        B["n_gen"][n] = st.n_generated
        B["seen"][n].copy_(st.seen[0])
        B["hidden"][n].copy_(st.hidden[0])
        B["c0"][n] = st.c0[0]
        if st.pending is not None:  # joins after eager frames: its last frame is fed next
            B["frame_out"][n].copy_(st.pending[0])
        s = st.settings
        B["penalty"][n] = s.repetition_penalty
        B["min_new"][n] = s.min_new_tokens
        self.samp[0].set_row(n, s.talker, self.V)
        self.samp[1].set_row(n, s.subtalker, self.Vc)
        st.cache = None  # the row holds it now
        self.owner.append(weakref.ref(st))
        self.host_pos.append(L)
        self._ids[id(st)] = n

    def _leave(self, row: int) -> None:
        """Free `row`: the last occupied row moves into it (rows stay contiguous)."""
        last = len(self.owner) - 1
        if row != last:
            p = self.host_pos[last] + 1
            for t in self.cache.k + self.cache.v:
                t[row, :, :p].copy_(t[last, :, :p])
            for k, t in self.buf.items():
                if k in ("masks", "noise_cp"):
                    t[:, row].copy_(t[:, last])
                else:
                    t[row].copy_(t[last])
            for s in self.samp:
                for t in s.tensors():
                    t[row].copy_(t[last])
            self.owner[row], self.host_pos[row] = self.owner[last], self.host_pos[last]
        self.owner.pop()
        self.host_pos.pop()
        self._ids = {id(s): i for i, r in enumerate(self.owner) if (s := r()) is not None}

    def _tidy(self) -> None:
        """Free the rows of sessions that ended or were dropped (garbage collected)."""
        row = 0
        while row < len(self.owner):
            st = self.owner[row]()
            if st is None or st.done:
                self._leave(row)
            else:
                row += 1
        self._eager = {k: r for k, r in self._eager.items() if r() is not None and not r().done}

    # ------------------------------------------------------------------ the frame
    def next_frames(self, states: list[GenState]) -> list[torch.Tensor | None]:
        """`FrameGenerator.next_frames` (same results) through the static rows."""
        with self._lock, torch.inference_mode():
            return self._next_frames(states)

    def _next_frames(self, states: list[GenState]) -> list[torch.Tensor | None]:
        self._tidy()
        static, eager = [], []
        for st in states:
            if id(st) in self._ids and self.owner[self._ids[id(st)]]() is st:
                static.append(st)
            elif (id(st) in self._eager and self._eager[id(st)]() is st) or st.done or not self.eligible(st) \
                    or (self.max_rows is not None and len(self.owner) >= self.max_rows):
                self._eager[id(st)] = weakref.ref(st)
                eager.append(st)
            else:
                self._join(st)
                static.append(st)
        out: dict[int, torch.Tensor | None] = {}
        if eager:
            out.update(zip(map(id, eager), self.gen.eager_frames(eager)))
        live = [st for st in static if not st.done]
        if live:
            out.update(zip(map(id, live), self._frame_rows(live)))
        return [out.get(id(st)) for st in states]

    def _frame_rows(self, live: list[GenState]) -> list[torch.Tensor | None]:
        B, n = self.buf, len(self.owner)
        b = min(bucket(n), self.rows)
        rows = [self._ids[id(st)] for st in live]
        feed = [st.pending is not None for st in live]
        masks = torch.zeros(2, b, dtype=torch.bool)
        masks[1, rows] = True
        fed_rows = [r for r, f in zip(rows, feed) if f]
        masks[0, fed_rows] = True
        B["masks"][:, :b].copy_(masks)  # rows >= b stay as they were (not run)
        if fed_rows:
            texts = torch.stack([self.gen.text_input(st) for st, f in zip(live, feed) if f]).to(self.device, self.dtype)
            B["text_in"].index_copy_(0, torch.tensor(fed_rows, device=self.device), texts)
        for st, r, f in zip(live, rows, feed):  # each session's noise, in the eager draw order
            if f and st.settings.talker.do_sample:
                B["noise_c0"][r].exponential_(1.0, generator=st.generator)
            if st.settings.subtalker.do_sample:
                for j in range(self.G - 1):
                    B["noise_cp"][j, r].exponential_(1.0, generator=st.generator)
        self._run(b)
        host = B["frame_out"][:b].cpu()  # the one host sync: the frames, c0 in column 0
        res = []
        for st, r, f in zip(live, rows, feed):
            if f:
                st.pending = None
                st.pos += 1
                st.n_generated += 1
                self.host_pos[r] += 1
            if self.gen.check_stop(st, int(host[r, 0]), self.eos_id):
                res.append(None)
            else:
                st.frames += 1
                st.pending = _PENDING
                res.append(host[r].clone())
        return res


def capture(fn, snapshot, restore, pool=None) -> "torch.cuda.CUDAGraph":
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
    with torch.cuda.graph(g, pool=pool):
        fn()
    restore(snap)
    return g
