"""CUDA-graph decoding for one session: the talker step, the 15-step code predictor (with
sampling) and the streaming codec step are each captured once and replayed every frame.

There is no counterpart in the official package (its loop is eager Python, one kernel launch per
op, ~2,000 launches per frame). The approach follows gpt-fast / faster-qwen3-tts: every tensor a
step touches is a static buffer of fixed shape; the position lives on the device; attention runs
over all `capacity` cache slots under a position mask (`slot <= pos`); counters (`pos`,
`n_generated`) and the repetition-penalty set are updated in place inside the graph. Sampling
noise (the Exp(1) draws of the exponential race) is drawn from the session's own generator into
static buffers *before* each replay, in the order the eager path draws it, so a seeded session
gives the same codes graphed or eager.

`StaticDecoder` is also a plain eager object: on a CPU (or with `graphs=False`) it runs the same
static functions without capture; the tests check that it reproduces `FrameGenerator` exactly on
CPU, and (on a GPU) that replay == eager.

    dec = StaticDecoder(tts.talker, eos_id, capacity=1024)
    dec.start(prompt, settings)            # eager prefill into the static cache
    while (frame := dec.next_frame()) is not None: ...
"""

from __future__ import annotations

import torch

from .generator import GenerationSettings, code_predictor_frame, seeded_generator
from .prompt import TalkerPrompt
from .sampling import pick_with_noise, process_talker_logits, suppress_mask


class StaticDecoder:
    """One session's fixed-shape decode state and its (optionally) captured steps."""

    def __init__(self, talker, eos_id: int, capacity: int = 1024, graphs: bool | None = None):
        self.talker, self.cfg, self.eos_id, self.capacity = talker, talker.cfg, eos_id, capacity
        w = talker.model.codec_embedding.weight
        dev, dt = w.device, w.dtype
        self.device, self.dtype = dev, dt
        self.graphs = (dev.type == "cuda") if graphs is None else graphs
        G, V, H = self.cfg.num_code_groups, self.cfg.vocab_size, self.cfg.hidden_size
        Vc = self.cfg.code_predictor.vocab_size
        self.cache = talker.model.new_cache(1, capacity)
        self.cp_cache = talker.code_predictor.model.new_cache(1, G)
        self.suppress = suppress_mask(V, eos_id, device=dev)
        self.slots = torch.arange(capacity, device=dev)
        # static inputs / state / outputs
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)  # next talker position
        self.n_gen = torch.zeros(1, dtype=torch.long, device=dev)
        self.seen = torch.zeros(1, V, dtype=torch.bool, device=dev)
        self.hidden = torch.zeros(1, 1, H, device=dev, dtype=dt)
        self.c0 = torch.zeros(1, dtype=torch.long, device=dev)
        self.frame_in = torch.zeros(1, G, dtype=torch.long, device=dev)
        self.text_in = torch.zeros(1, H, device=dev, dtype=dt)
        self.noise_c0 = torch.ones(1, V, device=dev)
        self.noise_cp = torch.ones(G - 1, 1, Vc, device=dev)
        self.frame_out = torch.zeros(1, G, dtype=torch.long, device=dev)
        self._graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self._graph_key = None

    # ------------------------------------------------------------------ static steps (pure)
    def _talker_step(self) -> None:
        """frame_in + text_in -> talker at `pos` -> next c0 (in place); pos, n_gen, seen advance."""
        s = self.settings
        x = self.talker.frame_embed(self.frame_in) + self.text_in  # (1, H)
        mask = (self.slots <= self.pos)[None]  # (1, capacity): attend to slots 0..pos
        h = self.talker.model(x[:, None], self.cache, self.pos, mask=mask)  # (1, 1, H)
        self.pos.add_(1)
        self._pick_c0(h, s)

    def _pick_c0(self, h: torch.Tensor, s: GenerationSettings) -> None:
        logits = self.talker.codec_head(h[:, 0]).float()  # (1, V)
        x = process_talker_logits(logits, self.seen, self.n_gen, self.suppress, self.eos_id, s.repetition_penalty, s.min_new_tokens)
        c0 = pick_with_noise(x, s.talker, self.noise_c0)  # (1,)
        self.seen.scatter_(1, c0[:, None], True)
        self.hidden.copy_(h)
        self.c0.copy_(c0)
        self.n_gen.add_(1)

    def _predict(self) -> None:
        """(hidden, c0) -> frame_out (1, G): the 15 code-predictor steps with their picks."""
        p, noise = self.settings.subtalker, self.noise_cp
        frame = code_predictor_frame(self.talker, self.hidden, self.c0, self.cp_cache, self.slots,
                                     lambda j, logits: pick_with_noise(logits, p, noise[j]))
        self.frame_out.copy_(frame)

    # ------------------------------------------------------------------ graphs
    def _run(self, name: str, fn) -> None:
        if not self.graphs:
            fn()
            return
        key = (self.settings.talker, self.settings.subtalker, self.settings.repetition_penalty, self.settings.min_new_tokens)
        if self._graph_key != key:  # sampling settings are baked into a capture
            self._graphs.clear()
            self._graph_key = key
        g = self._graphs.get(name)
        if g is None:
            g = self._capture(fn)
            self._graphs[name] = g
        g.replay()

    def _capture(self, fn) -> "torch.cuda.CUDAGraph":
        g = capture(fn, self._snapshot, self._restore)
        # the graph reads the cached RoPE tables by address: keep them alive even if a longer
        # cache elsewhere makes the model build new ones
        self._keep = (self.talker.model._rope, self.talker.code_predictor.model._rope)
        return g

    def _state(self) -> list[torch.Tensor]:
        return self.cache.k + self.cache.v + [self.pos, self.n_gen, self.seen, self.hidden, self.c0, self.frame_out]

    def _snapshot(self) -> list[torch.Tensor]:
        return [t.clone() for t in self._state()]

    def _restore(self, snap) -> None:
        for t, src in zip(self._state(), snap):
            t.copy_(src)

    # ------------------------------------------------------------------ session
    @torch.inference_mode()
    def start(self, prompt: TalkerPrompt, settings: GenerationSettings, generator: torch.Generator | None = None) -> None:
        """Eager prefill into the static cache, then the first c0 (as `FrameGenerator.start`)."""
        settings.validate()
        L = prompt.prefill.shape[0]
        if L + settings.max_new_tokens + 1 > self.capacity:
            raise ValueError(f"prompt ({L}) + max_new_tokens ({settings.max_new_tokens}) exceeds the static cache ({self.capacity})")
        self.settings, self.prompt = settings, prompt
        self.generator = generator if generator is not None else seeded_generator(self.device, settings.seed)
        self.seen.zero_()
        self.n_gen.zero_()
        x = prompt.prefill.to(self.device, self.dtype)[None]  # (1, L, H)
        h = self.talker.model(x, self.cache, self.slots[:L], kv_len=L)[:, -1:]  # (1, 1, H)
        self.pos.fill_(L)
        self._draw_c0()
        self._pick_c0(h, settings)
        self.frames, self.n_generated, self.pending = 0, 1, False
        self.done = self.stopped_by_eos = self.hit_ceiling = False

    def _draw_c0(self) -> None:
        if self.settings.talker.do_sample:
            self.noise_c0.exponential_(1.0, generator=self.generator)

    @torch.inference_mode()
    def next_frame(self) -> torch.Tensor | None:
        """As `FrameGenerator.next_frame`: the next frame's codes (G,) on CPU, or None."""
        if self.done:
            return None
        s = self.settings
        if self.pending:  # feed the frame handed out last time
            p, t = self.prompt, self.frames - 1
            self.text_in.copy_((p.trailing[t] if t < p.trailing.shape[0] else p.tts_pad)[None])
            self.frame_in.copy_(self.frame_out)
            self._draw_c0()
            self._run("talker", self._talker_step)
            self.n_generated += 1
            self.pending = False
        if int(self.c0[0]) == self.eos_id:  # the one host sync per frame
            self.done = self.stopped_by_eos = True
            return None
        if self.n_generated >= s.max_new_tokens:
            self.done = True
            return None
        if s.frame_ceiling is not None and self.frames >= s.frame_ceiling:
            self.done = self.hit_ceiling = True
            return None
        if s.subtalker.do_sample:
            for j in range(self.noise_cp.shape[0]):  # the eager path's draw order
                self.noise_cp[j].exponential_(1.0, generator=self.generator)
        self._run("predict", self._predict)
        self.frames += 1
        self.pending = True
        return self.frame_out[0].to("cpu", copy=True)


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
