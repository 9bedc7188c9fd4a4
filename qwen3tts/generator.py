"""Frame generator: prefill once, then one step per 80 ms frame — for one session or for many
sessions batched together.

Mirrors the official loop (`Qwen3TTSForConditionalGeneration.generate` -> HF `_sample` on the
talker, with the code predictor run inside the talker's forward; talker.md §6.1):

    prefill (positions 0..L-1) -> h, c0 = pick(codec_head(h))
    loop: stop if c0 == EOS or max_new_tokens c0 were picked (that c0 gets no sub-codes)
          c1..c15 = code_predictor(h, c0)     (fresh 16-slot cache, positions 0..15)
          yield [c0..c15]
          x = sum of the 16 embeddings + trailing[t] (or tts_pad)
          h = talker step at position L + t;  c0 = pick(codec_head(h))

State lives in `GenState` (static talker KV cache, `seen` ids for the repetition penalty, RNG,
position); the model weights are shared and read-only. `next_frames(states)` advances any set of
sessions by one frame together: every projection / MLP / head runs as one (B, ·) GEMM, so the
weights are read once for all B sessions (decode is memory-bound: B sessions cost little more than
one), attention runs per session over its own cache, and each session samples with its own
settings and generator — a session's frames do not depend on who it is batched with (tested).
Sessions join (after `start`) and leave (EOS, limit, cancel) at frame boundaries. The single
session API (`next_frame`) is the batch of one. The one host sync per step is the EOS check,
where the codes are handed out anyway. The step's tensor functions and the stop rules are
`framestep`'s, the same ones the fixed-shape batched step (`static_batch`) runs and captures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import threading

import torch

from .framestep import code_predictor_frame, frame_input, pick_c0, stop_rule
from .model.layers import KVCache
from .model.talker import Talker
from .prompt import TalkerPrompt
from .sampling import SamplingParams, pick_rows, suppress_mask

__all__ = ["FrameGenerator", "GenState", "GenerationSettings", "code_predictor_frame", "seeded_generator"]


@dataclass(frozen=True)
class GenerationSettings:
    talker: SamplingParams = SamplingParams()
    subtalker: SamplingParams = SamplingParams()
    repetition_penalty: float = 1.05
    max_new_tokens: int = 2048
    min_new_tokens: int = 2
    seed: int | None = None
    frame_ceiling: int | None = None  # stop a runaway generation after this many frames


    def validate(self) -> None:
        self.talker.validate("talker")
        self.subtalker.validate("subtalker")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")


@dataclass
class GenState:
    cache: KVCache
    prompt: TalkerPrompt
    settings: GenerationSettings
    generator: torch.Generator
    seen: torch.Tensor  # (1, V) bool: codebook-0 ids picked so far
    hidden: torch.Tensor | None = None  # (1, 1, H) talker hidden that produced c0
    c0: torch.Tensor | None = None  # (1,) int64
    pos: int = 0  # next talker position
    n_generated: int = 0  # codebook-0 tokens picked
    frames: int = 0  # frames emitted
    pending: torch.Tensor | None = None  # last frame, fed to the talker on the next call
    done: bool = False
    stopped_by_eos: bool = False
    hit_ceiling: bool = False
    trace: dict | None = field(default=None)

    @torch.inference_mode()
    def snapshot(self) -> tuple:
        """What one `next_frames` call changes (the KV cache rows it writes sit at `pos` and later,
        so a replay rewrites them): `restore` makes the state as it was, RNG included."""
        return (self.pos, self.n_generated, self.frames, self.pending, self.hidden, self.c0, self.done, self.stopped_by_eos,
                self.hit_ceiling, self.seen.clone(), self.generator.get_state())

    @torch.inference_mode()
    def restore(self, snap: tuple) -> None:
        (self.pos, self.n_generated, self.frames, self.pending, self.hidden, self.c0, self.done, self.stopped_by_eos,
         self.hit_ceiling, seen, rng) = snap
        self.seen.copy_(seen)
        self.generator.set_state(rng)


class FrameGenerator:
    """Prefill, the frame step and the stop rule of the talker + code predictor (batched over
    sessions). A session's talker cache starts with room for its prompt and `initial_cache`
    frames and doubles when full (`_ensure_capacity`), so memory follows the speech made."""

    def __init__(self, talker: Talker, eos_id: int, initial_cache: int = 256):
        self.talker = talker
        self.cfg = talker.cfg
        self.eos_id = eos_id
        self.initial_cache = initial_cache
        w = talker.model.codec_embedding.weight
        self.device, self.dtype = w.device, w.dtype
        self.suppress = suppress_mask(self.cfg.vocab_size, eos_id, device=self.device)
        self.n_groups = self.cfg.num_code_groups
        self._scratch = threading.local()  # per-thread code-predictor caches, by batch size
        self._slots = torch.arange(self.n_groups, device=self.device)  # code-predictor positions
        self.static = None  # a static_batch.StaticBatch running next_frames, when attached

    # ------------------------------------------------------------------ setup
    @torch.inference_mode()
    def start(self, prompt: TalkerPrompt, settings: GenerationSettings, trace: bool = False) -> GenState:
        settings.validate()
        L = prompt.prefill.shape[0]
        cap = L + min(settings.max_new_tokens, self.initial_cache) + 1
        g = seeded_generator(self.device, settings.seed)
        st = GenState(
            cache=self.talker.model.new_cache(1, cap, zeroed=False),  # read up to `pos` only (kv_len, per-row lengths)
            prompt=prompt,
            settings=settings,
            generator=g,
            seen=torch.zeros(1, self.cfg.vocab_size, dtype=torch.bool, device=self.device),
            trace={"talker_logits": [], "step_inputs": [], "talker_hidden": [], "cp_logits": []} if trace else None,
        )
        x = prompt.prefill.to(self.device, self.dtype)[None]  # (1, L, H)
        h = self.talker.model(x, st.cache, torch.arange(L, device=self.device), kv_len=L, shared=prompt.shared)[:, -1:]  # (1, 1, H)
        st.pos = L
        self._pick_c0([st], h)
        return st

    def _ensure_capacity(self, st: GenState) -> None:
        if st.pos < st.cache.max_len:
            return
        new = self.talker.model.new_cache(1, st.cache.max_len * 2, zeroed=False)
        for a, b in zip(new.k + new.v, st.cache.k + st.cache.v):
            a[:, :, : b.shape[2]].copy_(b)
        st.cache = new

    # ------------------------------------------------------------------ hot path
    def _cp_cache(self, batch: int) -> KVCache:
        """Scratch code-predictor cache (every slot read in a frame is written in that frame)."""
        caches = self._scratch.__dict__.setdefault("cp", {})
        if batch not in caches:
            caches[batch] = self.talker.code_predictor.model.new_cache(batch, self.n_groups)
        return caches[batch]

    def _pick_c0(self, states: list[GenState], h: torch.Tensor) -> None:
        """h (B, 1, H): talker hiddens of `states` -> each state's next codebook-0 id."""
        seen = _rows([st.seen for st in states])  # (B, V)
        n_gen = torch.tensor([st.n_generated for st in states], device=self.device)  # (B,)
        pens = {st.settings.repetition_penalty for st in states}
        pen = pens.pop() if len(pens) == 1 else torch.tensor([[st.settings.repetition_penalty] for st in states], device=self.device)
        min_new = torch.tensor([st.settings.min_new_tokens for st in states], device=self.device)
        logits, c0 = pick_c0(self.talker, h, seen, n_gen, self.suppress, self.eos_id, pen, min_new,
                             lambda x: pick_rows(x, [st.settings.talker for st in states], [st.generator for st in states]))  # (B,)
        if states[0].trace is not None:
            for b, st in enumerate(states):
                st.trace["talker_logits"].append(logits[b].clone())
                st.trace["talker_hidden"].append(h[b, 0].clone())
        for b, st in enumerate(states):
            st.seen.scatter_(1, c0[b : b + 1, None], True)
            st.hidden, st.c0 = h[b : b + 1], c0[b : b + 1]
            st.n_generated += 1

    def predict_codes(self, states: list[GenState]) -> torch.Tensor:
        """Codebooks 1..G-1 for each state's (hidden, c0): returns the frames (B, G) int64."""
        params, gens = [st.settings.subtalker for st in states], [st.generator for st in states]
        trace = states[0].trace is not None
        cp_logits = []

        def pick(j, logits):  # (B, vocab) -> (B,)
            if trace:
                cp_logits.append(logits.clone())
            return pick_rows(logits, params, gens)

        frames = code_predictor_frame(self.talker, _rows([st.hidden for st in states]), _rows([st.c0 for st in states]),
                                      self._cp_cache(len(states)), self._slots, pick)
        if trace:
            for b, st in enumerate(states):
                st.trace["cp_logits"].append(torch.stack([lg[b] for lg in cp_logits]))
        return frames

    @staticmethod
    def text_input(st: GenState) -> torch.Tensor:
        """The text half of the talker input that feeds st's last frame: the trailing text
        hidden of that frame's index, tts_pad once the text has run out. (H,)"""
        p, t = st.prompt, st.frames - 1  # t: index of this frame
        return p.trailing[t] if t < p.trailing.shape[0] else p.tts_pad

    # the stop rules (`framestep.stop_rule`), the same function object on every path
    check_stop = staticmethod(stop_rule)

    def step_frame(self, states: list[GenState], frames: torch.Tensor) -> None:
        """Feed each state its frame just produced (frames (B, G)) and pick the next c0s."""
        texts = [self.text_input(st) for st in states]
        x = frame_input(self.talker, frames, torch.stack(texts).to(self.device, self.dtype))  # (B, H)
        for b, st in enumerate(states):
            if st.trace is not None:
                st.trace["step_inputs"].append(x[b].clone())
            self._ensure_capacity(st)
        h = self.talker.model.forward_rows(x[:, None], [st.cache for st in states], [st.pos for st in states])  # (B, 1, H)
        for st in states:
            st.pos += 1
        self._pick_c0(states, h)

    # ------------------------------------------------------------------ loop
    def next_frames(self, states: list[GenState]) -> list[torch.Tensor | None]:
        """One frame for every state together: for each, its codes (G,) int64 on CPU, or None
        when its generation has ended (it then stays ended). With a `static` batch attached
        (`static_batch.StaticBatch`: the fixed-shape, CUDA-graph path) it runs the frame."""
        if self.static is not None:
            return self.static.next_frames(states)
        return self.eager_frames(states)

    @torch.inference_mode()
    def eager_frames(self, states: list[GenState]) -> list[torch.Tensor | None]:
        """`next_frames` on the eager path (any shapes, per-session caches)."""
        live = [st for st in states if not st.done]
        stepping = [st for st in live if st.pending is not None]
        if stepping:  # feed the previous frames now (they were handed out first)
            self.step_frame(stepping, _rows([st.pending for st in stepping]))
            for st in stepping:
                st.pending = None
        out: dict[int, torch.Tensor] = {}
        if not live:
            return [None] * len(states)
        c0s = _rows([st.c0 for st in live]).tolist()  # the one host sync per step
        ready = []
        for st, c0 in zip(live, c0s):
            if not self.check_stop(st, c0, self.eos_id):
                ready.append(st)
        if ready:
            frames = self.predict_codes(ready)  # (B, G)
            host = frames.cpu()
            for b, st in enumerate(ready):
                st.frames += 1
                st.pending = frames[b : b + 1]
                out[id(st)] = host[b]
        return [out.get(id(st)) for st in states]

    def next_frame(self, st: GenState) -> torch.Tensor | None:
        """The next frame's codes (G,) int64 on CPU, or None when generation has ended."""
        return self.next_frames([st])[0]

    def frames(self, st: GenState):
        while (f := self.next_frame(st)) is not None:
            yield f


def seeded_generator(device, seed: int | None) -> torch.Generator:
    """A session's generator: seeded by `seed`, or from torch's global RNG when None."""
    g = torch.Generator(device=device)
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g


def _rows(ts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate batch-1 tensors along dim 0 (no copy for a batch of one)."""
    return ts[0] if len(ts) == 1 else torch.cat(ts)
