"""Frame generator: prefill once, then one step per 80 ms frame.

Mirrors the official loop (`Qwen3TTSForConditionalGeneration.generate` -> HF `_sample` on the
talker, with the code predictor run inside the talker's forward; talker.md §6.1):

    prefill (positions 0..L-1) -> h, c0 = pick(codec_head(h))
    loop: stop if c0 == EOS or max_new_tokens c0 were picked (that c0 gets no sub-codes)
          c1..c15 = code_predictor(h, c0)     (fresh 16-slot cache, positions 0..15)
          yield [c0..c15]
          x = sum of the 16 embeddings + trailing[t] (or tts_pad)
          h = talker step at position L + t;  c0 = pick(codec_head(h))

State lives in `GenState` (static talker KV cache, code-predictor cache, `seen` ids for the
repetition penalty, RNG); the model weights are shared and read-only. `step_frame` is the hot
path: fixed-shape tensor work with no host sync; the one sync per frame is the EOS check at the
frame boundary, where the codes are handed out anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .model.layers import KVCache
from .model.talker import Talker
from .prompt import TalkerPrompt
from .sampling import SamplingParams, pick, process_talker_logits, suppress_mask


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
    cp_cache: KVCache
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


class FrameGenerator:
    def __init__(self, talker: Talker, eos_id: int, initial_cache: int = 1024):
        self.talker = talker
        self.cfg = talker.cfg
        self.eos_id = eos_id
        self.initial_cache = initial_cache
        w = talker.model.codec_embedding.weight
        self.device, self.dtype = w.device, w.dtype
        self.suppress = suppress_mask(self.cfg.vocab_size, eos_id, device=self.device)
        self.n_groups = self.cfg.num_code_groups

    # ------------------------------------------------------------------ setup
    @torch.inference_mode()
    def start(self, prompt: TalkerPrompt, settings: GenerationSettings, trace: bool = False) -> GenState:
        settings.validate()
        L = prompt.prefill.shape[0]
        cap = L + min(settings.max_new_tokens, self.initial_cache) + 1
        g = torch.Generator(device=self.device)
        g.manual_seed(settings.seed if settings.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        st = GenState(
            cache=self.talker.model.new_cache(1, cap),
            cp_cache=self.talker.code_predictor.model.new_cache(1, self.n_groups),
            prompt=prompt,
            settings=settings,
            generator=g,
            seen=torch.zeros(1, self.cfg.vocab_size, dtype=torch.bool, device=self.device),
            trace={"talker_logits": [], "step_inputs": [], "talker_hidden": [], "cp_logits": []} if trace else None,
        )
        x = prompt.prefill.to(self.device, self.dtype)[None]  # (1, L, H)
        h = self.talker.model(x, st.cache, torch.arange(L, device=self.device), kv_len=L)[:, -1:]  # (1, 1, H)
        st.pos = L
        self._pick_c0(st, h)
        return st

    def _ensure_capacity(self, st: GenState) -> None:
        if st.pos < st.cache.max_len:
            return
        new = self.talker.model.new_cache(1, st.cache.max_len * 2)
        for a, b in zip(new.k + new.v, st.cache.k + st.cache.v):
            a[:, :, : b.shape[2]].copy_(b)
        st.cache = new

    # ------------------------------------------------------------------ hot path
    def _pick_c0(self, st: GenState, h: torch.Tensor) -> None:
        logits = self.talker.codec_head(h[:, 0]).float()  # (1, V)
        if st.trace is not None:
            st.trace["talker_logits"].append(logits[0].clone())
            st.trace["talker_hidden"].append(h[0, 0].clone())
        s = st.settings
        x = process_talker_logits(logits, st.seen, st.n_generated, self.suppress, self.eos_id, s.repetition_penalty, s.min_new_tokens)
        c0 = pick(x, s.talker, st.generator)  # (1,)
        st.seen.scatter_(1, c0[:, None], True)
        st.hidden, st.c0 = h, c0
        st.n_generated += 1

    def predict_codes(self, st: GenState) -> torch.Tensor:
        """Codebooks 1..G-1 for the current (hidden, c0): returns the frame (1, G) int64."""
        cp = self.talker.code_predictor
        proj = cp.small_to_mtp_projection
        x = proj(torch.cat([st.hidden, self.talker.codec_embed(st.c0)[:, None]], dim=1))  # (1, 2, Hc)
        pos = torch.arange(2, device=self.device)
        codes = [st.c0]
        cp_logits = []
        for j in range(self.n_groups - 1):
            o = cp.model(x, st.cp_cache, pos, kv_len=j + 2)[:, -1]  # (1, Hc)
            logits = cp.lm_head[j](o).float()  # (1, vocab)
            if st.trace is not None:
                cp_logits.append(logits[0].clone())
            c = pick(logits, st.settings.subtalker, st.generator)  # (1,)
            codes.append(c)
            if j + 1 < self.n_groups - 1:
                x = proj(cp.model.codec_embedding[j](c)[:, None])  # (1, 1, Hc)
                pos = torch.tensor([j + 2], device=self.device)
        if st.trace is not None:
            st.trace["cp_logits"].append(torch.stack(cp_logits))
        return torch.stack(codes, dim=1)  # (1, G)

    def step_frame(self, st: GenState, frame: torch.Tensor) -> None:
        """Feed the frame just produced and pick the next c0."""
        p = st.prompt
        t = st.frames - 1  # index of this frame
        text = p.trailing[t] if t < p.trailing.shape[0] else p.tts_pad
        x = self.talker.frame_embed(frame) + text.to(self.dtype)  # (1, H)
        if st.trace is not None:
            st.trace["step_inputs"].append(x[0].clone())
        self._ensure_capacity(st)
        h = self.talker.model(x[:, None], st.cache, torch.tensor([st.pos], device=self.device), kv_len=st.pos + 1)  # (1, 1, H)
        st.pos += 1
        self._pick_c0(st, h)

    # ------------------------------------------------------------------ loop
    @torch.inference_mode()
    def next_frame(self, st: GenState) -> torch.Tensor | None:
        """The next frame's codes (G,) int64 on CPU, or None when generation has ended."""
        if st.done:
            return None
        if st.pending is not None:  # feed the previous frame now (it was handed out first)
            self.step_frame(st, st.pending)
            st.pending = None
        if int(st.c0[0]) == self.eos_id:  # the one host sync per frame
            st.done = st.stopped_by_eos = True
            return None
        if st.n_generated >= st.settings.max_new_tokens:  # that last c0 gets no sub-codes
            st.done = True
            return None
        if st.settings.frame_ceiling is not None and st.frames >= st.settings.frame_ceiling:
            st.done = st.hit_ceiling = True
            return None
        frame = self.predict_codes(st)
        st.frames += 1
        st.pending = frame
        return frame[0].cpu()

    def frames(self, st: GenState):
        while (f := self.next_frame(st)) is not None:
            yield f
