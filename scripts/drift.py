#!/usr/bin/env python
"""Greedy-code drift of the bf16, int8, w8a8 and w4a8 modes against float32 (full-size random 0.6B weights).

    python scripts/drift.py --frames 40

The float32 model generates greedily (x-vector voice, a few sentences); the reference frames
are then replayed, teacher-forced, through each other mode: at every frame the mode picks
codebook 0 from the same history (compared with the reference), then the code predictor runs
from the reference codebook 0 (its 15 picks are compared; a miss cascades within the frame),
and the *reference* frame is fed back. Reported: agreement of codebook 0, of codebooks 1..15,
and of whole frames. Random weights give sharper logits than a trained model may, so read
these as an indication, not a guarantee.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen3tts.dev.random_model import random_tts, write_random_model  # noqa: E402
from qwen3tts.sampling import pick, process_talker_logits  # noqa: E402

TEXTS = ["Hello! This is a short benchmark sentence.", "The quick brown fox jumps over the lazy dog.", "Numbers like 42 and 7 are fine too."]


MODES = {"bf16": (torch.bfloat16, None), "bf16+int8": (torch.bfloat16, "int8"), "w8a8": (torch.float32, "w8a8"),
         "bf16+w8a8": (torch.bfloat16, "w8a8"), "w4a8": (torch.float32, "w4a8")}


def build(path, dtype, quantize):
    return random_tts(path, seed=0, dtype=dtype, quantize=quantize)


@torch.inference_mode()
def reference(tts, frames):
    g = torch.Generator().manual_seed(0)
    voice = tts.create_voice_prompt(((torch.randn(24000 * 4, generator=g) * 0.1).numpy(), 24000), x_vector_only=True)
    out = []
    for text in TEXTS:
        res = tts.generate(text, language="English", voice=voice, do_sample=False, subtalker_dosample=False, max_new_tokens=frames + 1)
        out.append(res.codes)
    return voice, out


@torch.inference_mode()
def replay(tts, voice, refs, frames):
    gen = tts.generator
    n = c0_ok = sub_ok = sub_n = frame_ok = 0
    for text, ref in zip(TEXTS, refs):
        st = gen.start(tts._prompt(text, "English", voice, False), tts.settings(do_sample=False, subtalker_dosample=False, max_new_tokens=frames + 1))
        for t in range(ref.shape[0]):
            # st.c0 is this mode's pick for frame t (from the teacher-forced history)
            mine0 = int(st.c0[0])
            st.c0 = ref[t : t + 1, 0].clone()
            codes = gen.predict_codes([st])[0]
            c0_ok += mine0 == int(ref[t, 0])
            same = codes[1:] == ref[t, 1:]
            sub_ok += int(same.sum())
            sub_n += same.numel()
            frame_ok += (mine0 == int(ref[t, 0])) and bool(same.all())
            n += 1
            st.frames += 1
            gen.step_frame([st], ref[t : t + 1].clone())
    return {"frames": n, "codebook0_agreement": round(c0_ok / n, 4), "codebooks1_15_agreement": round(sub_ok / sub_n, 4),
            "frame_agreement": round(frame_ok / n, 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--modes", default="bf16,bf16+int8,w8a8,bf16+w8a8,w4a8", help="comma-separated: " + ", ".join(MODES))
    args = ap.parse_args()
    torch.set_num_threads(2)
    path = write_random_model(tempfile.mkdtemp(prefix="drift-"), weights=False)
    tts = build(path, torch.float32, None)
    voice, refs = reference(tts, args.frames)
    res = {"fp32 (replay, sanity)": replay(tts, voice, refs, args.frames)}
    del tts
    gc.collect()
    for name in args.modes.split(","):
        dtype, q = MODES[name]
        tts = build(path, dtype, q)
        res[name] = replay(tts, voice, refs, args.frames)
        del tts
        gc.collect()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
