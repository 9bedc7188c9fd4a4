"""Talker prefill construction (dual track: text vector + codec vector per position).

Mirrors the prompt-building part of `Qwen3TTSForConditionalGeneration.generate` (qwen_tts
modeling_qwen3_tts.py; talker.md §2.5-2.7, reference README "Official behaviour" 3):

* head: `T(role ids[:3])`, then `tts_pad`... `tts_bos` added position-wise to the codec list
  `prefix ++ [speaker] ++ [codec_pad]` (the list's final `codec_bos` is used by the body);
  prefix = `[think, think_bos, lang, think_eos]`, or `[nothink, think_bos, think_eos]` for "auto";
* body, by mode: ICL (reference codes + transcript), x-vector only, or no reference (no speaker
  slot), each in streaming (text trickles in through `trailing`, one token per frame) or
  non-streaming layout (all text in the prompt).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from .config import Qwen3TTSConfig


@dataclass
class TalkerPrompt:
    prefill: torch.Tensor  # (L, hidden): input embeddings of the prefill
    trailing: torch.Tensor  # (T, hidden): text vectors added at decode steps 0..T-1
    tts_pad: torch.Tensor  # (hidden,): text vector added after `trailing` runs out
    shared: int = 0  # leading rows of `prefill` that do not depend on the text (voice, language, instruct)


def supported_languages(cfg: Qwen3TTSConfig) -> list[str]:
    """'auto' plus the checkpoint's languages (dialects excluded), capitalised for display."""
    return ["auto"] + [k.capitalize() for k in cfg.talker.codec_language_id if "dialect" not in k]


def language_prefix(cfg: Qwen3TTSConfig, language: str | None) -> list[int]:
    t = cfg.talker
    lang = (language or "auto").strip().lower()
    if lang == "auto":
        return [t.codec_nothink_id, t.codec_think_bos_id, t.codec_think_eos_id]
    if lang not in t.codec_language_id:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(supported_languages(cfg))}")
    return [t.codec_think_id, t.codec_think_bos_id, t.codec_language_id[lang], t.codec_think_eos_id]


_CONSTANTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # talker -> (weights stamp, {ids: T(ids)})


def _weights_stamp(talker) -> tuple | None:
    """What T(ids) depends on besides ids: the text table module and the projection's tensors
    (storage and in-place version); None when a tensor keeps no version (an inference tensor)."""
    try:
        return (id(talker.model.text_embedding),) + tuple((p.data_ptr(), p._version) for p in talker.text_projection.parameters())
    except RuntimeError:
        return None


def constant_text(talker, ids: list[int]) -> torch.Tensor:
    """T(ids) for ids that every prompt of a model contains (the tts_bos / tts_eos / tts_pad
    vectors, the assistant role header): computed once per model, then the same tensor (read
    only; the same call, so the same numbers as computing it again)."""
    stamp = _weights_stamp(talker)
    dev = talker.model.codec_embedding.weight.device
    if stamp is None:
        return talker.text_embed(torch.tensor(ids, dtype=torch.long, device=dev))
    kept = _CONSTANTS.get(talker)
    if kept is None or kept[0] != stamp:
        _CONSTANTS[talker] = kept = (stamp, {})
    key = tuple(ids)
    if key not in kept[1]:
        kept[1][key] = talker.text_embed(torch.tensor(ids, dtype=torch.long, device=dev))
    return kept[1][key]


@torch.inference_mode()
def build_prompt(
    talker,
    cfg: Qwen3TTSConfig,
    input_ids: list[int],
    language: str | None,
    speaker: torch.Tensor | None = None,
    ref_ids: list[int] | None = None,
    ref_codes: torch.Tensor | None = None,
    non_streaming: bool = False,
    instruct_ids: list[int] | None = None,
) -> TalkerPrompt:
    """`input_ids`: ids of `<|im_start|>assistant\\n{text}<|im_end|>\\n<|im_start|>assistant\\n`;
    `ref_ids`: ids of `<|im_start|>assistant\\n{ref}<|im_end|>\\n` (ICL only); `ref_codes`:
    (T_ref, 16) reference codes (ICL only); `speaker`: (hidden,) x-vector or None."""
    tc = cfg.talker
    dev = talker.model.codec_embedding.weight.device
    if len(input_ids) < 9:
        raise ValueError("input_ids must be the full assistant template (at least 9 ids)")

    def ids_t(ids):
        return torch.tensor(ids, dtype=torch.long, device=dev)

    def T(ids):  # text track: projected text embeddings, (n, hidden)
        return talker.text_embed(ids_t(ids))

    def C(ids):  # codec track: talker codec embeddings, (n, hidden)
        return talker.codec_embed(ids_t(ids))

    tts_bos, tts_eos, tts_pad = constant_text(talker, [cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id])
    codec = [C(language_prefix(cfg, language))]
    if speaker is not None:
        codec.append(speaker.to(dev, tts_pad.dtype).reshape(1, -1))
    codec.append(C([tc.codec_pad_id, tc.codec_bos_id]))
    codec = torch.cat(codec)  # (n, hidden)
    n = codec.shape[0]
    head = torch.cat([tts_pad.expand(n - 2, -1), tts_bos[None]]) + codec[:-1]  # (n-1, hidden)
    parts = [T(instruct_ids)] if instruct_ids else []
    parts += [constant_text(talker, input_ids[:3]), head]  # the role header
    text_ids = input_ids[3:-5]
    shared = sum(p.shape[0] for p in parts)

    if ref_codes is not None:  # ICL
        if ref_ids is None:
            raise ValueError("ICL mode needs the reference transcript ids")
        t = torch.cat([T(ref_ids[3:-2] + text_ids), tts_eos[None]])  # (M+N+1, hidden)
        shared += len(ref_ids[3:-2]) if non_streaming else min(len(ref_ids[3:-2]), len(ref_codes) + 1)  # the transcript's rows
        c = torch.cat([C([tc.codec_bos_id]), talker.frame_embed(ref_codes.to(dev))])  # (T_ref+1, hidden)
        if non_streaming:
            parts += [t + C([tc.codec_pad_id] * t.shape[0]), c + tts_pad]
            trailing = tts_pad[None]
        elif t.shape[0] > c.shape[0]:
            parts.append(t[: c.shape[0]] + c)
            trailing = t[c.shape[0] :]
        else:
            parts.append(torch.cat([t, tts_pad.expand(c.shape[0] - t.shape[0], -1)]) + c)
            trailing = tts_pad[None]
    elif non_streaming:
        t = torch.cat([T(text_ids), tts_eos[None]])
        parts += [t + C([tc.codec_pad_id] * t.shape[0]), tts_pad[None] + C([tc.codec_bos_id])]
        trailing = tts_pad[None]
    else:
        if not text_ids:
            raise ValueError("text is empty")
        parts.append(T(text_ids[:1]) + codec[-1:])
        trailing = torch.cat([T(text_ids[1:]), tts_eos[None]]) if len(text_ids) > 1 else tts_eos[None]
    return TalkerPrompt(torch.cat(parts), trailing, tts_pad, shared)
