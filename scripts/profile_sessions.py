#!/usr/bin/env python
"""Where one batched step goes: 1 session and `--sessions` sessions (`batch.step`, 1-frame
chunks, greedy) stepped side by side, each step split into its parts, medians per step in ms.

    python scripts/profile_sessions.py --model /work/fullsize --quantize w8a8 --isa avx2
    python scripts/profile_sessions.py --model DIR --clock cpu --threads 1   # main-thread CPU time

Parts: the talker step (feeding the last frame, codebook-0 pick included), the 15 code-predictor
steps (their picks included), sampling (`pick_rows`, inside the two before), the codec push
(`CodecDecoder.step` on the stacked streams), stacking / unstacking the streams' codec states,
and the rest of `batch.step` (chunk bookkeeping, range checks, Python). `--clock cpu` reads
`time.thread_time` (the calling thread's CPU time: with 1 thread it is the whole compute and
is not disturbed by other processes on a shared machine); the default is wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import TEXT, TORCH_ENV  # noqa: E402,F401  (sets the torch ISA variables before torch loads)

import torch  # noqa: E402

PARTS = ("talker_step", "code_predictor", "sampling", "codec_push", "state_stack", "other", "step")


def _timed(obj, name: str, part: str, acc: dict, clock) -> None:
    """Wrap obj.name so that its time adds to acc[part] (an instance attribute shadows the method)."""
    f = getattr(obj, name)

    def w(*a, **k):
        t0 = clock()
        try:
            return f(*a, **k)
        finally:
            acc[part] = acc.get(part, 0.0) + clock() - t0

    setattr(obj, name, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model directory (default: random full-size 0.6B weights made in memory)")
    ap.add_argument("--quantize", default="w8a8")
    ap.add_argument("--isa", choices=["auto", "avx512", "avx2", "portable", "neon"], default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16, help="frames per session per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from qwen3tts import Qwen3TTS, batch, generator, native
    from qwen3tts.codec.layers import StreamState

    if args.isa != "auto":
        native.set_isa(args.isa)
    torch.set_num_threads(args.threads)
    q = None if args.quantize in ("", "none") else args.quantize
    if args.model:
        tts = Qwen3TTS.from_pretrained(args.model, quantize=q)
    else:
        import tempfile

        from qwen3tts.dev.random_model import random_tts, write_random_model

        with tempfile.TemporaryDirectory(prefix="qwen3tts-prof-") as tmp:
            tts = random_tts(write_random_model(tmp, preset="0.6b-base", weights=False), seed=0, quantize=q)
    g = torch.Generator().manual_seed(0)
    voice = tts.create_voice_prompt(((torch.randn(5 * 24000, generator=g) * 0.1).numpy(), 24000), x_vector_only=True)
    kw = dict(do_sample=False, subtalker_dosample=False)

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    acc: dict[str, float] = {}
    _timed(tts.generator, "step_frame", "talker_step", acc, clock)
    _timed(tts.generator, "predict_codes", "code_predictor", acc, clock)
    _timed(generator, "pick_rows", "sampling", acc, clock)
    _timed(tts.speech_tokenizer.decoder, "step", "codec_push", acc, clock)
    _timed(StreamState, "stack", "state_stack", acc, clock)
    _timed(StreamState, "unstack", "state_stack", acc, clock)

    def run(n: int, frames: int, per_step: list | None) -> None:
        utts = [batch.Utterance(tts, TEXT, language="English", voice=voice, max_new_tokens=frames + 1, **kw) for _ in range(n)]
        batch.step(tts, utts)  # prefills + first frames
        while not any(u.generated_all for u in utts):  # steps that make a frame in every session
            acc.clear()
            t0 = clock()
            chunks = batch.step(tts, utts)
            acc["step"] = clock() - t0
            acc["other"] = acc["step"] - sum(acc.get(p, 0.0) for p in ("talker_step", "code_predictor", "codec_push", "state_stack"))
            if per_step is not None and all(c is not None for c in chunks):  # (not the step where one ends)
                per_step.append(dict(acc))

    with torch.inference_mode():
        for n in (1, args.sessions):
            run(n, 2, None)  # warm-up of the shapes
        got: dict[int, list] = {1: [], args.sessions: []}
        for _ in range(args.repeats):
            for n in got:  # alternating, so that machine noise hits both alike
                run(n, args.frames, got[n])
    med = {n: {p: statistics.median(s.get(p, 0.0) for s in steps) * 1e3 for p in PARTS} for n, steps in got.items()}
    n = args.sessions
    isa = native.isa() if native.available() else "none"
    ratio = n * med[1]["step"] / med[n]["step"]
    if args.json:
        print(json.dumps({"isa": isa, "quantize": args.quantize, "threads": torch.get_num_threads(), "clock": args.clock,
                          "sessions": n, "steps": [len(got[1]), len(got[n])], "throughput_ratio": round(ratio, 3),
                          "ms_per_step": {p: [round(med[1][p], 3), round(med[n][p], 3)] for p in PARTS}}))
        return
    print(f"isa {isa}, {args.quantize}, {torch.get_num_threads()} threads, "
          f"{args.clock} clock, median ms per step over {len(got[1])} / {len(got[n])} steps")
    print(f"{'part':16s} {'1 session':>10s} {f'{n} sessions':>11s} {'ratio':>6s}")
    for p in PARTS:
        a, b = med[1][p], med[n][p]
        print(f"{p:16s} {a:10.2f} {b:11.2f} {b / a if a > 0 else float('nan'):6.2f}")
    print(f"throughput {n} sessions / 1: {ratio:.2f}x")


if __name__ == "__main__":
    main()
