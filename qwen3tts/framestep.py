"""The frame step, written once: the pure tensor functions every decode path runs — the eager
loop (`generator.FrameGenerator`, any shapes, per-session caches) and the fixed-shape batched
step (`static_batch.StaticBatch`, the function captured as a CUDA graph) — plus the stop rules
both apply when a frame's codebook-0 id reaches the host.

Mirrors one iteration of the official talker loop (HF `_sample` on the talker, the code
predictor inside the talker's forward; talker.md §6.1):

    x = sum of the last frame's 16 embeddings + its text input          (`frame_input`)
    h = talker step (attention: the caller's: per-session or static)    (the caller's `attend`)
    c0 = pick(process(codec_head(h)))                                    (`pick_c0`)
    stop if c0 == EOS, or max_new_tokens picked, or the frame ceiling   (`stop_rule`)
    c1..c15 = the 15 code-predictor steps                               (`code_predictor_frame`)

The tensor functions have no `.item()`, no host branch on values and allocate nothing that
depends on values: they are captured as they are. What differs between the paths is passed in:
the attention over the talker cache and the pick (`sampling.pick_rows` drawing from each
session's generator, or `sampling.pick_static` reading noise drawn beforehand).
"""

from __future__ import annotations

import torch

from .model.layers import KVCache
from .model.talker import Talker
from .sampling import process_talker_logits


def frame_input(talker: Talker, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The talker input that feeds frames (B, G) int64 back: the sum of their 16 codec
    embeddings plus each row's text input (B, H) (`FrameGenerator.text_input`). -> (B, H)"""
    return talker.frame_embed(frames) + text


def pick_c0(talker: Talker, h: torch.Tensor, seen: torch.Tensor, n_generated: torch.Tensor, suppress: torch.Tensor, eos_id: int,
            penalty, min_new_tokens, pick) -> tuple[torch.Tensor, torch.Tensor]:
    """Talker hiddens h (B, 1, H) -> (logits (B, V) float32 as the head gives them, c0 (B,)):
    the codec head, the talker's logit rules (`process_talker_logits`: repetition penalty over
    `seen` (B, V), EOS banned below `min_new_tokens`, control ids suppressed) and
    `pick(processed (B, V)) -> (B,)`."""
    logits = talker.codec_head(h[:, 0]).float()  # (B, V)
    x = process_talker_logits(logits, seen, n_generated, suppress, eos_id, penalty, min_new_tokens)
    return logits, pick(x)


def code_predictor_frame(talker: Talker, hidden: torch.Tensor, c0: torch.Tensor, cache: KVCache, slots: torch.Tensor, pick) -> torch.Tensor:
    """The 15 code-predictor steps of one frame (talker.md §4): hidden (B, 1, H) and c0 (B,) ->
    the frame (B, G). `slots`: arange(>= G) on the device (positions, sliced: no allocation);
    `pick(j, logits (B, vocab) f32) -> (B,)` picks codebook j + 1. Every slot of `cache` read in
    a frame is written in that frame (a scratch cache of G slots)."""
    cp = talker.code_predictor
    proj = cp.small_to_mtp_projection
    G = talker.cfg.num_code_groups
    x = proj(torch.cat([hidden, talker.codec_embed(c0)[:, None]], dim=1))  # (B, 2, Hc)
    codes = [c0]
    for j in range(G - 1):
        pos = slots[:2] if j == 0 else slots[j + 1 : j + 2]
        o = cp.model(x, cache, pos, kv_len=j + 2)[:, -1]  # (B, Hc)
        c = pick(j, cp.lm_head[j](o).float())  # (B,)
        codes.append(c)
        if j + 1 < G - 1:
            x = proj(cp.model.codec_embedding[j](c)[:, None])  # (B, 1, Hc)
    return torch.stack(codes, dim=1)  # (B, G)


def stop_rule(st, c0: int, eos_id: int) -> bool:
    """The stop rules, applied to a session (`generator.GenState`) when its codebook-0 id c0 is
    on the host and before the frame is handed out: EOS, `max_new_tokens` codebook-0 ids picked
    (that last c0 gets no frame), or the frame ceiling. Marks st done (and why) and returns
    True when it stops."""
    if c0 == eos_id:
        st.done = st.stopped_by_eos = True
    elif st.n_generated >= st.settings.max_new_tokens:
        st.done = True
    elif st.settings.frame_ceiling is not None and st.frames >= st.settings.frame_ceiling:
        st.done = st.hit_ceiling = True
    else:
        return False
    return True
