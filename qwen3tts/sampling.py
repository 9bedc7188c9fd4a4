"""Token picking for the talker (codebook 0) and the code predictor (codebooks 1..15), as pure
tensor functions: fixed shapes, no `.item()`, no `torch.multinomial`, no host branches on
values — usable inside a captured CUDA graph.

Mirrors Hugging Face 4.57.3 `generate` with the official settings (talker.md §6.2-6.3):
logits in float32, then for the talker
  1. repetition penalty over the *set* of earlier codebook-0 ids (`l/p` if l > 0 else `l*p`),
  2. EOS banned while fewer than `min_new_tokens` (2) tokens were generated,
  3. ids `[V-1024, V)` except EOS suppressed;
then, when sampling: temperature, top-k (ties with the k-th value kept), top-p (HF TopP: drop
the low tail whose cumulative probability is <= 1 - top_p, keep at least one), softmax, draw.
Greedy: argmax (first index on ties) of the processed logits. The draw is an exponential race
(`argmax(p / E)`, E ~ Exp(1)), which samples exactly the softmax distribution and is reproducible
from a `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0

    def validate(self, name: str = "sampling") -> None:
        if not self.temperature > 0:
            raise ValueError(f"{name}: temperature must be > 0")
        if self.top_k < 0:
            raise ValueError(f"{name}: top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"{name}: top_p must be in (0, 1]")


def suppress_mask(vocab_size: int, eos_id: int, n_control: int = 1024, device=None) -> torch.Tensor:
    """True for the talker ids `generate` suppresses: the last `n_control` ids except EOS."""
    m = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    m[max(0, vocab_size - n_control) :] = True
    m[eos_id] = False
    return m


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V) f32, seen (B, V) bool: ids generated so far in this request; `penalty` a
    float or a (B, 1) tensor (one per session)."""
    if isinstance(penalty, (int, float)) and penalty == 1.0:
        return logits
    pen = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, pen, logits)


def process_talker_logits(logits, seen, n_generated, suppress, eos_id: int, penalty: float, min_new_tokens: int = 2):
    """Steps 1-3 above. `n_generated`: (B,) or scalar int64 tensor of tokens picked so far;
    `penalty` and `min_new_tokens` scalars or per-row tensors ((B, 1) and (B,))."""
    x = repetition_penalty(logits.float(), seen, penalty)
    ban_eos = torch.as_tensor(n_generated, device=x.device) < min_new_tokens  # (B,) or ()
    eos_col = x[..., eos_id]
    x = x.clone()
    x[..., eos_id] = torch.where(ban_eos, torch.full_like(eos_col, float("-inf")), eos_col)
    return x.masked_fill(suppress, float("-inf"))


def warp(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature, top-k, top-p (HF warper order); -inf marks removed ids."""
    x = logits / p.temperature if p.temperature != 1.0 else logits
    if 0 < p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_x, idx = torch.sort(x, dim=-1, descending=False)
        cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - p.top_p)
        remove[..., -1:] = False
        x = x.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    return x


def pick(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) processed logits -> (B,) int64 ids."""
    noise = torch.empty_like(logits, dtype=torch.float32).exponential_(1.0, generator=generator) if p.do_sample else None
    return pick_with_noise(logits, p, noise)


def pick_with_noise(logits: torch.Tensor, p: SamplingParams, noise: torch.Tensor | None) -> torch.Tensor:
    """`pick` with the Exp(1) draws given ((B, V) float32, drawn beforehand: the CUDA-graph
    path fills a static buffer from the session's generator before each replay)."""
    if not p.do_sample:
        return logits.argmax(dim=-1)
    probs = warp(logits, p).softmax(dim=-1)
    return (probs / noise).argmax(dim=-1)


def pick_rows(logits: torch.Tensor, params: list[SamplingParams], generators: list) -> torch.Tensor:
    """Row b of (B, V) processed logits picked with its own settings and generator -> (B,) ids.
    Rows with equal settings are warped together; each sampled row draws its exponentials from
    its own generator, so row b gets exactly the id `pick(logits[b:b+1], params[b], generators[b])`
    would give (a session's random stream does not depend on who it is batched with)."""
    if len(params) == 1:
        return pick(logits, params[0], generators[0])
    groups: dict[SamplingParams, list[int]] = {}
    for b, p in enumerate(params):
        groups.setdefault(p, []).append(b)
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    for p, rows in groups.items():
        sub = logits if len(rows) == logits.shape[0] else logits[rows]
        noise = None
        if p.do_sample:  # (len(rows), V): each row from its own generator
            noise = torch.cat([torch.empty_like(sub[:1], dtype=torch.float32).exponential_(1.0, generator=generators[b]) for b in rows])
        ids = pick_with_noise(sub, p, noise)
        if len(rows) == logits.shape[0]:
            return ids
        out[rows] = ids
    return out


@dataclass
class RowSampling:
    """Per-row sampling settings as device tensors (the fixed-shape batched step: every row
    its own settings inside one captured graph). `top_p_cut` is `1 - top_p` computed on the
    host in double, as `warp` does, then stored in float32."""
    do_sample: torch.Tensor  # (B,) bool
    temperature: torch.Tensor  # (B, 1) float32
    top_k: torch.Tensor  # (B,) int64, 0: off
    top_p_cut: torch.Tensor  # (B, 1) float32
    top_p_on: torch.Tensor  # (B, 1) bool

    @classmethod
    def empty(cls, rows: int, device) -> "RowSampling":
        return cls(torch.zeros(rows, dtype=torch.bool, device=device), torch.ones(rows, 1, device=device),
                   torch.zeros(rows, dtype=torch.long, device=device), torch.zeros(rows, 1, device=device),
                   torch.zeros(rows, 1, dtype=torch.bool, device=device))

    def set_row(self, b: int, p: SamplingParams, vocab: int) -> None:
        self.do_sample[b] = p.do_sample
        self.temperature[b] = p.temperature
        self.top_k[b] = p.top_k if 0 < p.top_k < vocab else 0
        self.top_p_cut[b] = 1 - p.top_p
        self.top_p_on[b] = p.top_p < 1.0

    def rows(self, n: int) -> "RowSampling":
        return RowSampling(*(t[:n] for t in self.tensors()))

    def tensors(self) -> list[torch.Tensor]:
        return [self.do_sample, self.temperature, self.top_k, self.top_p_cut, self.top_p_on]


def pick_static(logits: torch.Tensor, s: RowSampling, noise: torch.Tensor, k_max: int, use_top_p: bool) -> torch.Tensor:
    """`pick_with_noise` for rows with their own settings, in fixed shapes: (B, V) processed
    logits -> (B,) ids. Row b gets the id `pick_with_noise(logits[b:b+1], params_b, noise[b:b+1])`
    gives: the same operations on the same values (top-k's threshold is the k-th largest value,
    read from one top-`k_max` of the row; a row with top-k off or top-p 1 is left as `warp`
    leaves it). `k_max` (>= every row's top_k) and `use_top_p` (any row uses top-p) are fixed per
    captured graph. Greedy rows take the argmax of the unwarped logits."""
    greedy = logits.argmax(dim=-1)
    x = logits / s.temperature
    if k_max > 0:
        vals = torch.topk(x, k_max, dim=-1).values  # (B, k_max), descending
        kth = vals.gather(1, (s.top_k.clamp(1, k_max) - 1)[:, None])  # (B, 1)
        x = x.masked_fill((s.top_k > 0)[:, None] & (x < kth), float("-inf"))
    if use_top_p:
        sorted_x, idx = torch.sort(x, dim=-1, descending=False)
        cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
        remove = (cum <= s.top_p_cut) & s.top_p_on
        remove[..., -1:] = False
        x = x.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    sampled = (x.softmax(dim=-1) / noise).argmax(dim=-1)
    return torch.where(s.do_sample, sampled, greedy)
