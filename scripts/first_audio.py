#!/usr/bin/env python
"""Where the time to first audio goes, stage by stage, for an x-vector and an ICL voice (both
made beforehand), on the full-size random 0.6B-Base model (or `--model DIR`):

    python scripts/first_audio.py --quantize w8a8 [--isa avx2] [--threads 1 --cpu-time] [--repeats 7]

Stages of one request (the path of `Qwen3TTS.stream`, 1-frame chunks): `setup` (validation,
prompt build, the streaming codec started from the voice's primed state: `batch.Utterance`),
`prefill` (the talker over the prompt, its voice part reused from `NativeStack.prefixes`, and
the first codebook-0 pick: `FrameGenerator.start`), `frame` (the 15 code-predictor steps of the
first frame), `push` (the first codec push: the first 80 ms of audio). Each stage is the minimum
over the repeats, which alternate between the two voices; `first_audio` times the whole call to
the first chunk as scripts/bench.py does. `--cpu-time` reports process CPU time instead of wall
time: on a machine shared with other jobs, with `--threads 1`, it moves far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import REF_TEXT, TEXT, TORCH_ENV  # noqa: E402,F401 (TORCH_ENV: --isa holds torch's kernels too, set before torch loads)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: random 0.6B-Base weights in memory)")
    ap.add_argument("--quantize", choices=["int8", "w8a8", "w4a8"])
    ap.add_argument("--isa", choices=["auto", "avx512", "avx2", "portable", "neon"], default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--ref-seconds", type=float, default=5.0)
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    args = ap.parse_args()

    from qwen3tts import native
    from qwen3tts.batch import Utterance
    from qwen3tts.codec.tokenizer import push_many

    if args.isa != "auto":
        native.set_isa(args.isa)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.model:
        from qwen3tts import Qwen3TTS

        tts = Qwen3TTS.from_pretrained(args.model, quantize=args.quantize)
    else:
        from qwen3tts.dev.random_model import random_tts, write_random_model

        with tempfile.TemporaryDirectory(prefix="qwen3tts-fa-") as tmp:
            tts = random_tts(write_random_model(tmp, preset="0.6b-base", weights=False), seed=0, quantize=args.quantize)
    g = torch.Generator().manual_seed(0)
    ref = (torch.randn(int(args.ref_seconds * 24000), generator=g) * 0.1).numpy()
    voices = {"xvector": tts.create_voice_prompt((ref, 24000), x_vector_only=True),
              "icl": tts.create_voice_prompt((ref, 24000), ref_text=REF_TEXT)}
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=args.max_new_tokens)

    def stages(voice) -> dict:
        t, out = clock(), {}
        u = Utterance(tts, TEXT, "English", voice, None, 1, True, **kw)
        out["setup"], t = clock() - t, clock()
        u._ensure_state()
        out["prefill"], t = clock() - t, clock()
        frame = tts.generator.next_frames([u.state])[0]
        out["frame"], t = clock() - t, clock()
        push_many([u.decoder], [frame[None]])
        out["push"] = clock() - t
        return out

    def first_audio(voice) -> float:
        t = clock()
        it = tts.stream(TEXT, language="English", voice=voice, frames_per_chunk=1, **kw)
        next(it)
        dt = clock() - t
        it.close()
        return dt

    for v in voices.values():  # warm-up: first calls, oneDNN primitives, the voice prefixes
        first_audio(v), first_audio(v)
    runs = {k: [] for k in voices}
    for _ in range(args.repeats):
        for k, v in voices.items():
            s = stages(v)
            s["first_audio"] = first_audio(v)
            runs[k].append(s)
    res = {"isa": native.isa() if native.available() else "none", "threads": args.threads, "quantize": args.quantize,
           "clock": "cpu" if args.cpu_time else "wall"}
    for k, rs in runs.items():
        res[k] = {s: round(min(r[s] for r in rs) * 1000, 1) for s in rs[0]}
    prompts = {k: tts._prompt(TEXT, "English", v, False) for k, v in voices.items()}
    res["prompt_rows"] = {k: [p.prefill.shape[0], p.shared] for k, p in prompts.items()}  # [rows, rows kept per voice]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
