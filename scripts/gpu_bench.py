#!/usr/bin/env python
"""The GPU serving benchmark that `scripts/gpu_check.sh` runs: the engine's path (batched,
fixed-shape frame step captured as CUDA graphs, bf16 weights) on a full-size model.

    python scripts/gpu_bench.py --model DIR                 # on CUDA, bf16, CUDA graphs on
    python scripts/gpu_bench.py --dry-run                   # CPU, tiny model, tiny counts

Measures (x-vector voice, 1-frame chunks, warm: every bucket captured before it is timed):
single stream: first audio (call -> first PCM chunk, median of runs), speed (audio seconds per
wall second), p50 / p95 gap between consecutive chunks; the same single stream with the eager
path for reference; aggregate at 1, 4, 10, 16, 32 sessions stepped together (`batch.step`, as
the server's engine does): audio seconds per wall second all together, and the slowest
session's own speed; peak GPU memory for the model plus one session. Prints one JSON line last
and exits 1 when a goal (`GOALS`) is missed or the GPU tests failed (`--tests-rc`); a dry run
exits 0 when it ran (its numbers are not goals).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = ("This is a benchmark sentence that is long enough to keep the talker busy for many frames, "
        "so that the timings settle down nicely.")
SESSIONS = (1, 4, 10, 16, 32)
# name: (key in the results, comparison, target)
GOALS = {
    "single_stream_x_realtime": ("single.x_realtime", ">=", 10.0),
    "first_audio_ms": ("single.first_audio_ms", "<=", 50.0),
    "p95_gap_ms": ("single.p95_gap_ms", "<=", 30.0),
    "sessions16_x_realtime_total": ("aggregate.16.x_realtime_total", ">=", 80.0),
    "sessions32_each_x_realtime": ("aggregate.32.min_session_x_realtime", ">=", 1.0),
    "peak_gpu_mem_gb_one_session": ("peak_gpu_mem_gb_one_session", "<=", 3.0),
}


def lookup(res: dict, key: str):
    cur = res
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def evaluate(res: dict) -> dict:
    """Each goal: its value (None when not measured), target and whether it is met (an
    unmeasured or non-finite value is not met)."""
    out = {}
    for name, (key, op, target) in GOALS.items():
        v = lookup(res, key)
        ok = isinstance(v, (int, float)) and math.isfinite(v) and (v >= target if op == ">=" else v <= target)
        out[name] = {"value": v, "op": op, "target": target, "met": bool(ok)}
    return out


def exit_code(res: dict) -> int:
    if res.get("dry_run"):
        return 0
    return 0 if res["goals_met"] and res.get("tests_rc") in (0, None) else 1


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _sync(tts):
    import torch

    if tts.device.type == "cuda":
        torch.cuda.synchronize()


def single_stream(tts, voice, frames: int, runs: int, kw: dict) -> dict:
    """First audio (median of `runs` short streams) and one long stream's speed and gaps."""
    firsts = []
    for i in range(runs):
        _sync(tts)
        t0 = time.perf_counter()
        for _ in tts.stream(TEXT, voice=voice, frames_per_chunk=1, max_new_tokens=2, seed=i, **kw):
            firsts.append(time.perf_counter() - t0)
            break
    _sync(tts)
    t0 = time.perf_counter()
    stamps, samples = [], 0
    for c in tts.stream(TEXT, voice=voice, frames_per_chunk=1, max_new_tokens=frames, seed=1234, **kw):
        stamps.append(time.perf_counter())
        samples += c.audio.numel()
    wall = stamps[-1] - t0 if stamps else float("nan")
    gaps = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
    audio_s = samples / tts.sample_rate
    return {"first_audio_ms": statistics.median(firsts) * 1e3 if firsts else None, "frames": len(stamps), "audio_s": audio_s,
            "wall_s": wall, "x_realtime": audio_s / wall if wall > 0 else None, "p50_gap_ms": pct(gaps, 0.50),
            "p95_gap_ms": pct(gaps, 0.95), "max_gap_ms": max(gaps) if gaps else None}


def aggregate(tts, voice, n: int, frames: int, kw: dict) -> dict:
    """n sessions joined together and stepped frame by frame until all are done."""
    from qwen3tts.batch import Utterance, step

    utts = [Utterance(tts, TEXT, voice=voice, frames_per_chunk=1, max_new_tokens=frames, seed=1000 + i, **kw) for i in range(n)]
    samples, ended = [0] * n, [None] * n
    _sync(tts)
    t0 = time.perf_counter()
    while not all(u.done for u in utts):
        live = [i for i, u in enumerate(utts) if not u.done]
        for i, c in zip(live, step(tts, [utts[i] for i in live])):
            if c is not None:
                samples[i] += c.audio.numel()
            if utts[i].done:
                ended[i] = time.perf_counter()
    wall = max(ended) - t0
    own = [samples[i] / tts.sample_rate / (ended[i] - t0) for i in range(n)]
    total = sum(samples) / tts.sample_rate
    return {"sessions": n, "frames": sum(samples) // tts.samples_per_frame, "audio_s": total, "wall_s": wall,
            "x_realtime_total": total / wall, "min_session_x_realtime": min(own)}


def run(args) -> dict:
    import numpy as np
    import torch

    from qwen3tts import Qwen3TTS

    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    tts = Qwen3TTS.from_pretrained(args.model, device=args.device, dtype=dtype, cuda_graphs=args.cuda_graphs)
    load_s = time.perf_counter() - t0
    t = np.arange(int(3.0 * 24000)) / 24000
    ref = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    voice = tts.create_voice_prompt((ref, 24000), x_vector_only=True)
    kw = {}  # the model's sampling settings (as the server)
    t0 = time.perf_counter()
    tts.warm_up()
    for _ in tts.stream(TEXT, voice=voice, frames_per_chunk=1, max_new_tokens=6, **kw):
        pass
    warm_s = time.perf_counter() - t0
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "dtype": args.dtype, "dry_run": args.dry_run, "cuda_graphs": tts.generator.static is not None and tts.generator.static.graphs,
           "static_batch": tts.generator.static is not None, "load_s": load_s, "warm_up_s": warm_s, "tests_rc": args.tests_rc}
    res["single"] = single_stream(tts, voice, args.frames, args.runs, kw)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        res["peak_gpu_mem_gb_one_session"] = torch.cuda.max_memory_allocated(dev) / 1e9
    else:
        res["peak_gpu_mem_gb_one_session"] = None
    static, codec = tts.generator.static, tts.codec_batch
    tts.set_cuda_graphs("off")
    res["single_eager"] = single_stream(tts, voice, args.eager_frames, 2, kw)
    tts.generator.static, tts.codec_batch = static, codec
    res["aggregate"] = {}
    for n in args.sessions:
        aggregate(tts, voice, n, 3, kw)  # warm: this bucket's graph captured
        res["aggregate"][str(n)] = aggregate(tts, voice, n, args.agg_frames, kw)
    if dev.type == "cuda":
        res["peak_gpu_mem_gb_all"] = torch.cuda.max_memory_allocated(dev) / 1e9
    else:
        res["peak_gpu_mem_gb_all"] = None
    if static is not None:
        res["graph_capture_warned"] = static.warned or codec.warned
    return res


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the tiny fixture in a dry run)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu in a dry run)")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--cuda-graphs", default="on", choices=["on", "off", "auto"])
    ap.add_argument("--frames", type=int, default=None, help="frames of the long single stream (default 150; dry run 6)")
    ap.add_argument("--eager-frames", type=int, default=None, help="frames of the eager reference stream (default 40; dry run 4)")
    ap.add_argument("--agg-frames", type=int, default=None, help="frames per session in the aggregate runs (default 60; dry run 4)")
    ap.add_argument("--runs", type=int, default=None, help="first-audio runs (default 7; dry run 2)")
    ap.add_argument("--sessions", default=",".join(map(str, SESSIONS)), help="aggregate session counts")
    ap.add_argument("--tests-rc", type=int, default=None, help="exit status of the GPU tests (recorded; non-zero fails the check)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, tiny counts: the same code path and JSON keys")
    a = ap.parse_args(argv)
    dry = a.dry_run
    a.device = a.device or ("cpu" if dry else "cuda")
    a.dtype = a.dtype or ("bfloat16" if a.device.startswith("cuda") else "float32")
    a.model = a.model or (str(ROOT / "tests" / "fixtures" / "tiny" / "model") if dry else None)
    if a.model is None:
        ap.error("--model is required (except with --dry-run)")
    a.frames = a.frames or (6 if dry else 150)
    a.eager_frames = a.eager_frames or (4 if dry else 40)
    a.agg_frames = a.agg_frames or (4 if dry else 60)
    a.runs = a.runs or (2 if dry else 7)
    try:
        a.sessions = [int(x) for x in a.sessions.split(",") if x.strip()]
    except ValueError:
        ap.error("--sessions must be comma-separated integers")
    if not a.sessions or min(a.sessions) < 1:
        ap.error("--sessions must be positive")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        res = run(args)
        res["error"] = None
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        import traceback

        traceback.print_exc()
        res = {"dry_run": args.dry_run, "tests_rc": args.tests_rc, "error": f"{type(e).__name__}: {e}"[:500]}
    res["goals"] = evaluate(res)
    res["goals_met"] = all(g["met"] for g in res["goals"].values())
    code = 1 if res["error"] else exit_code(res)
    res["exit_code"] = code
    print(json.dumps(res), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
