#!/usr/bin/env python
"""Benchmark qwen3tts on a full-size random-weight model (0.6B-Base shapes) or a real one.

    python scripts/bench.py                       # random 0.6B-Base weights made in memory, fp32
    python scripts/bench.py --dtype bfloat16 --frames 25 --json
    python scripts/bench.py --model DIR           # a model directory (official layout)
    python scripts/bench.py --compare-official    # + the official qwen-tts on the same weights, same run
    python scripts/bench.py --isa avx2            # the AVX2 kernels on an AVX-512 CPU (torch's held to AVX2 too)
    python scripts/bench.py --fastest             # the fastest CPU mode the project ships (named in `dtype`)

Reports, per 80 ms frame: talker step (incl. codebook-0 pick), code predictor (15 steps incl.
sampling), codec (exact streaming decode of one frame), and all three together; prefill; time to
first audio (x-vector and ICL, short sentence, 1-frame chunks: call -> first PCM chunk); real-time
factor (compute time / audio time, lower is faster); offline codec decode RTF for 10 s of codes;
peak RSS; threads; the weight floor: bytes of weights one frame reads (talker once, the code
predictor's stack 15 times, each head once) over the read bandwidth measured here (`read_gbps`:
the fastest of a few float32 matrix-vector products and sums over a 256 MB matrix, far larger
than any L3, in plain memory and in the huge pages the native weights live in: the faster),
and talker + predictor over that floor. Timings are medians over the frames of `--repeats` runs after a warm-up.
Aggregate throughput of `--sessions` concurrent sessions vs one: `--repeats` runs in which one
session and n sessions are stepped side by side (a step of each in turn, each timed), medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

FASTEST = ("float32", "w4a8")  # (dtype, quantize) of the fastest CPU mode: native int4-weight decode steps

# `--isa avx2|portable` holds torch's own kernels (oneDNN, MKL, ATen) to that instruction set as
# well, as on a CPU without AVX-512; they read these when torch loads, hence before its import.
TORCH_ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
                 "portable": {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"}}


def _torch_isa_env(argv: list[str]) -> dict:
    isa = next((a.split("=", 1)[1] for a in argv if a.startswith("--isa=")), None)
    if isa is None and "--isa" in argv[:-1]:
        isa = argv[argv.index("--isa") + 1]
    env = TORCH_ISA_ENV.get(isa or "", {})
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in env}


TORCH_ENV = _torch_isa_env(sys.argv[1:])

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from qwen3tts.dev.random_model import random_tts, write_random_model  # noqa: E402

TEXT = "Hello! This is a short benchmark sentence."
REF_TEXT = "This is the reference clip that gives the voice."


def linear_bytes(mod) -> int:
    """Bytes of the linear weights under `mod` as its kernels read them (int8 + scales when
    quantized, else the weight's dtype)."""
    total = 0
    for m in mod.modules():
        if hasattr(m, "weight_q"):  # the native int8 weight, rows padded as the kernel reads them
            total += m.weight_q.numel() * m.weight_q.element_size() + m.scales.numel() * m.scales.element_size()
        elif hasattr(m, "quantized_weight"):
            wq, s = m.quantized_weight()
            total += wq.numel() * wq.element_size() + s.numel() * s.element_size()
        elif isinstance(m, torch.nn.Linear) or (hasattr(m, "in_features") and hasattr(m, "weight")):  # (`weight` last: the
            # file-backed text embedding reads its whole table when asked for it)
            total += m.weight.numel() * m.weight.element_size()
    return total


def weight_bytes_per_frame(tts) -> int:
    """Weights one frame reads: the talker's stack and codec head once, the code predictor's
    stack once per codebook after the first (15 passes), each of its heads once."""
    t = tts.talker
    cp = t.code_predictor
    passes = len(cp.lm_head)
    return (linear_bytes(t.model) + linear_bytes(t.codec_head) + passes * linear_bytes(cp.model) + linear_bytes(cp.lm_head)
            + linear_bytes(cp.small_to_mtp_projection))


def read_gbps(mb: int = 256, tries: int = 7, huge: bool = False, buffers: int = 3) -> float:
    """Read bandwidth (GB/s): the fastest of `tries` float32 matrix-vector products and `tries`
    sums over an `mb` MB matrix (torch's threads), alternating, over `buffers` fresh matrices
    (on a VM the speed of one allocation's pages varies up to 2x from one to the next: the
    floor is the best the machine gives); `huge`: the matrix in the memory the native kernels'
    packed weights live in (`native.hugepages`: 2 MB pages where it can)."""
    return max(_read_gbps(mb, tries, huge) for _ in range(buffers))


def _read_gbps(mb: int, tries: int, huge: bool) -> float:
    from qwen3tts.native import hugepages

    cols = 16384
    shape = (mb * 2**20 // (4 * cols), cols)
    a = hugepages.empty(shape, torch.float32).normal_() if huge else torch.randn(shape)
    x = torch.randn(cols)
    best = float("inf")
    for i in range(2 * tries + 2):  # the first of each: warm-up
        t0 = time.perf_counter()
        torch.mv(a, x) if i % 2 else a.sum()
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return a.numel() * 4 / best / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_frames(tts, voice, frames: int, settings_kw: dict):
    """Per-frame talker / predictor / codec times for one generation of `frames` frames, and the
    frames themselves: (prefill, talker, predictor, codec, codes (frames, 16))."""
    gen, dev = tts.generator, tts.device
    prompt = tts._prompt(TEXT, "English", voice, False)
    settings = tts.settings(max_new_tokens=frames + 1, **settings_kw)
    sync(dev)
    t0 = time.perf_counter()
    st = gen.start(prompt, settings)
    sync(dev)
    prefill = time.perf_counter() - t0
    dec = tts.speech_tokenizer.streaming_decoder()
    if voice is not None and voice.icl:  # as a stream starts: from the voice's primed codec state
        tts._prime(dec, voice)
    talker, pred, codec, got = [], [], [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        frame = gen.predict_codes([st])  # (1, G)
        got.append(frame[0].cpu())
        sync(dev)
        t1 = time.perf_counter()
        dec.push(frame.cpu())
        t2 = time.perf_counter()
        st.frames += 1
        gen.step_frame([st], frame)
        sync(dev)
        t3 = time.perf_counter()
        pred.append(t1 - t0)
        codec.append(t2 - t1)
        talker.append(t3 - t2)
    return prefill, talker, pred, codec, torch.stack(got)


def graph_frames(tts, voice, frames: int, settings_kw):
    """Per-frame time of the CUDA-graph path (StaticDecoder + CodecGraph; eager on CPU) and its
    time to first audio (prefill + first frame + its codec step)."""
    from qwen3tts.cuda_graph import CodecGraph, StaticDecoder

    dev = tts.device
    dec = StaticDecoder(tts.talker, tts.config.talker.codec_eos_token_id, capacity=512)
    cg = CodecGraph(tts.speech_tokenizer)
    settings = tts.settings(max_new_tokens=frames + 1, **settings_kw)
    prompt = tts._prompt(TEXT, "English", voice, False)
    dec.start(prompt, settings)
    for _ in range(3):  # capture + warm-up
        cg.push(dec.next_frame()[None])
    sync(dev)
    t0 = time.perf_counter()
    dec.start(tts._prompt(TEXT, "English", voice, False), settings)
    cg.push(dec.next_frame()[None])
    sync(dev)
    first = time.perf_counter() - t0
    times = []
    for _ in range(frames - 1):
        t0 = time.perf_counter()
        f = dec.next_frame()
        if f is None:
            break
        cg.push(f[None])
        sync(dev)
        times.append(time.perf_counter() - t0)
    return first, times


def first_audio(tts, voice, settings_kw) -> float:
    t0 = time.perf_counter()
    it = tts.stream(TEXT, language="English", voice=voice, frames_per_chunk=1, max_new_tokens=50, **settings_kw)
    next(it)
    dt = time.perf_counter() - t0
    it.close()
    return dt


def sessions_side_by_side(tts, voice, n: int, frames: int, settings_kw) -> dict:
    """1 session and `n` sessions (batch.step, `frames` frames each, 1-frame chunks) run side by
    side in one loop, one step of each in turn, each step timed on its own: machine noise (on a
    shared 2-core VM the same step swings 2x over seconds) then hits both alike. Returns
    {1: (audio s per wall s incl. the prefills, after them), n: (...)}."""
    from qwen3tts.batch import Utterance, step

    sets = {k: [Utterance(tts, TEXT, language="English", voice=voice, max_new_tokens=frames + 1, **settings_kw) for _ in range(k)]
            for k in (1, n)}
    first, rest = dict.fromkeys(sets, 0.0), dict.fromkeys(sets, 0.0)
    for k, utts in sets.items():  # every session's prefill + first frame
        t0 = time.perf_counter()
        step(tts, utts)
        first[k] = time.perf_counter() - t0
    while not all(u.done for utts in sets.values() for u in utts):
        for k, utts in sets.items():
            if not all(u.done for u in utts):
                t0 = time.perf_counter()
                step(tts, utts)
                rest[k] += time.perf_counter() - t0
    out = {}
    for k, utts in sets.items():
        total = sum(u.frames for u in utts)
        out[k] = (total * 0.08 / (first[k] + rest[k]), (total - k) * 0.08 / rest[k])
    return out


def compare_official(args, tts, ref, icl, kw) -> dict:
    """Official package vs us, same weights, same prompt (ICL, greedy), same process and run;
    the timed runs alternate between the two."""
    import official_bench as ob

    off, stubbed = ob.load(args.model)
    ob.time_generate(off, TEXT, ref, REF_TEXT, 2, 0)  # warm-up
    time_frames(tts, icl, 2, kw)
    off_frames, off_prefills, ours_tp = [], [], []
    for _ in range(args.repeats):  # alternate official / ours, so that machine noise hits both alike
        codes, f, p = ob.time_generate(off, TEXT, ref, REF_TEXT, args.frames, 1, warmup=0)
        off_frames += f
        off_prefills.append(p)
        _, t, q, _, ours_codes = time_frames(tts, icl, args.frames, kw)
        ours_tp += [a + b for a, b in zip(t, q)]
    off_prefill = statistics.median(off_prefills)
    tok = tts.speech_tokenizer
    tok.decode(codes)
    ob.time_decode(off, codes, 1)  # warm-up
    off_decs, dec = [], []
    for _ in range(2 * args.repeats):  # alternating as well (a decode is short: twice as many pairs)
        off_decs.append(ob.time_decode(off, codes, 1, warmup=0))
        t0 = time.perf_counter()
        tok.decode(codes)
        dec.append(time.perf_counter() - t0)
    off_dec, ours_dec = statistics.median(off_decs), statistics.median(dec)
    off_tp = statistics.median(off_frames)
    tp = statistics.median(ours_tp)
    n = codes.shape[0]
    return {
        "official_talker_predictor_ms_per_frame": round(off_tp * 1000, 1),
        "official_prefill_ms": round(off_prefill * 1000, 1),
        "official_codec_decode_ms_per_frame": round(off_dec / n * 1000, 1),
        "ours_talker_predictor_ms_per_frame_icl": round(tp * 1000, 1),
        "ours_codec_decode_ms_per_frame": round(ours_dec / n * 1000, 1),
        "speedup_talker_predictor": round(off_tp / tp, 2),
        "speedup_codec_decode": round(off_dec / ours_dec, 2),
        "speedup_codec_decode_pairs": [round(a / b, 2) for a, b in zip(off_decs, dec)],  # each adjacent pair
        "greedy_codes_equal_official": bool(ours_codes.shape == codes.shape and torch.equal(ours_codes, codes.cpu().long())),
        "official_torchaudio_stubbed": stubbed,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: random 0.6B-Base weights in memory)")
    ap.add_argument("--preset", default="0.6b-base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--quantize", choices=["int8", "w8a8", "w4a8"],
                    help="int8: weight-only int8 talker + predictor; w8a8: int8 weights and activations; w4a8: int4 weights, int8 activations")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ref-seconds", type=float, default=5.0)
    ap.add_argument("--codec-seconds", type=float, default=10.0)
    ap.add_argument("--sample", action="store_true", help="sample (official defaults) instead of greedy")
    ap.add_argument("--compare-official", action="store_true",
                    help="also time the official qwen-tts package on the same weights in this run (writes the random model to disk)")
    ap.add_argument("--cuda-graphs", action="store_true", help="also time the CUDA-graph single-stream path (eager static steps on CPU)")
    ap.add_argument("--sessions", type=int, default=4, help="concurrent sessions for the aggregate throughput figure (0: skip)")
    ap.add_argument("--isa", choices=["auto", "avx512", "avx2", "portable", "neon"], default="auto",
                    help="instruction set of the native kernels (default: the best this CPU has); avx2 / portable also hold "
                         "torch's oneDNN, MKL and ATen kernels to it")
    ap.add_argument("--fastest", action="store_true", help=f"the fastest CPU mode the project ships: --dtype {FASTEST[0]} --quantize {FASTEST[1]}")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--text-stream", help="only the streamed-text figures: words per second, comma-separated (scripts/bench_textstream.py)")
    ap.add_argument("--text-lookahead", type=int, default=0, help="with --text-stream: text tokens held before speech starts")
    args = ap.parse_args()
    if args.fastest:
        if (args.dtype != "float32" and args.dtype != FASTEST[0]) or args.quantize not in (None, FASTEST[1]):
            ap.error("--fastest picks --dtype and --quantize itself")
        args.dtype, args.quantize = FASTEST

    from qwen3tts import native

    if args.isa != "auto":
        native.set_isa(args.isa)  # raises when the library is missing or the CPU lacks the set
    isa = native.isa() if native.available() else "none (torch kernels only)"

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1) if hasattr(torch, "set_num_interop_threads") else None
    dtype = getattr(torch, args.dtype)
    dev = torch.device(args.device)
    # before the model (its 256 MB matrices are not counted in the model's peak RSS); the floor takes
    # the faster of plain memory and the huge pages the packed weights live in
    gbps_plain, gbps_huge = read_gbps(), read_gbps(huge=True)
    gbps = max(gbps_plain, gbps_huge)
    t0 = time.perf_counter()
    tmpdir = None
    if args.compare_official and not args.model:  # the official package needs the weights on disk
        tmpdir = tempfile.TemporaryDirectory(prefix="qwen3tts-bench-")
        args.model = str(write_random_model(tmpdir.name, preset=args.preset, weights=True))
        t0 = time.perf_counter()
    if args.model:
        from qwen3tts import Qwen3TTS

        tts = Qwen3TTS.from_pretrained(args.model, device=dev, dtype=dtype, quantize=args.quantize)
        model_desc = args.model if tmpdir is None else f"random {args.preset} (full-size, random weights on disk)"
    else:
        with tempfile.TemporaryDirectory(prefix="qwen3tts-bench-") as tmp:
            tts = random_tts(write_random_model(tmp, preset=args.preset, weights=False), seed=0, device=dev, dtype=dtype, quantize=args.quantize)
        model_desc = f"random {args.preset} (full-size, random weights in memory)"
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()

    g = torch.Generator().manual_seed(0)
    ref = (torch.randn(int(args.ref_seconds * 24000), generator=g) * 0.1).numpy()
    t0 = time.perf_counter()
    xvec = tts.create_voice_prompt((ref, 24000), x_vector_only=True)
    spk_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    icl = tts.create_voice_prompt((ref, 24000), ref_text=REF_TEXT)
    voice_ms = (time.perf_counter() - t0) * 1000
    kw = {} if args.sample else dict(do_sample=False, subtalker_dosample=False)
    if args.text_stream:
        from bench_textstream import run as text_stream_run

        res = {"model": model_desc, "cpu": cpu_name(), "dtype": args.dtype + (f"+{args.quantize}" if args.quantize else ""),
               "threads": torch.get_num_threads(), **text_stream_run(tts, xvec, [float(x) for x in args.text_stream.split(",")], kw,
                                                                     args.text_lookahead, args.repeats, icl)}
        print(json.dumps(res) if args.json else "\n".join(f"{k:24s} {v}" for k, v in res.items()))
        return

    time_frames(tts, xvec, 2, kw)  # warm-up
    first_audio(tts, xvec, kw)
    talker, pred, codec, prefills = [], [], [], []
    for r in range(args.repeats):
        p, t, q, c, _ = time_frames(tts, icl if r % 2 else xvec, args.frames, kw)
        prefills.append(p)
        talker += t
        pred += q
        codec += c
    fa_x = statistics.median(first_audio(tts, xvec, kw) for _ in range(3))
    fa_i = statistics.median(first_audio(tts, icl, kw) for _ in range(3))

    floor_bytes = weight_bytes_per_frame(tts)

    n_codec = int(args.codec_seconds * 12.5)
    codes = torch.randint(0, tts.speech_tokenizer.config.decoder.codebook_size, (n_codec, 16), generator=g)
    tts.speech_tokenizer.decode(codes[:5])
    offline_runs = []
    for _ in range(3):  # one decode is a single timing: the median of three
        t0 = time.perf_counter()
        tts.speech_tokenizer.decode(codes)
        offline_runs.append(time.perf_counter() - t0)
    codec_offline_s = statistics.median(offline_runs)

    graphs = graph_frames(tts, xvec, args.frames, kw) if args.cuda_graphs else None
    official = compare_official(args, tts, ref, icl, kw) if args.compare_official else None
    if tmpdir is not None:
        tmpdir.cleanup()

    thr, runs = {}, []
    if args.sessions > 1:
        sessions_side_by_side(tts, xvec, args.sessions, 2, kw)  # warm-up of the batched shapes
        got = {1: [], args.sessions: []}
        for _ in range(args.repeats):
            r = sessions_side_by_side(tts, xvec, args.sessions, max(args.frames, 40), kw)
            for n in got:
                got[n].append(r[n])
            runs.append(round(r[args.sessions][1] / r[1][1], 2))
        for n, xs in got.items():
            thr[n] = (statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs))

    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    frame_ms = med([a + b + c for a, b, c in zip(talker, pred, codec)])
    tp_ms = med([a + b for a, b in zip(talker, pred)])
    floor_ms = floor_bytes / (gbps * 1e9) * 1000
    res = {
        "model": model_desc,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "cpu": cpu_name(),
        "dtype": args.dtype + (f"+{args.quantize}" if args.quantize else ""),
        "threads": torch.get_num_threads(),
        "isa": isa,  # the native kernels' instruction set
        "torch_isa_env": TORCH_ENV,  # what holds torch's own kernels to it (--isa avx2 / portable)
        "native_decode": tts.talker.model.native is not None,  # decode steps in qwen3tts/native (w8a8 on CPU)
        "torch": torch.__version__,
        "frames_timed": len(talker),
        "talker_ms_per_frame": round(med(talker), 1),
        "predictor_ms_per_frame": round(med(pred), 1),
        "codec_ms_per_frame": round(med(codec), 1),
        "talker_predictor_ms_per_frame": round(tp_ms, 2),
        "weight_bytes_per_frame": floor_bytes,
        "read_gbps": round(gbps, 2),
        "read_gbps_4k_pages": round(gbps_plain, 2),  # the probe in plain memory
        "read_gbps_huge_pages": round(gbps_huge, 2),  # in native.hugepages memory
        "weight_floor_ms": round(floor_ms, 3),
        "talker_predictor_floor_ratio": round(tp_ms / floor_ms, 2),
        "frame_ms": round(frame_ms, 1),
        "rtf": round(frame_ms / 80.0, 3),
        "prefill_ms": round(med(prefills), 1),
        "first_audio_ms": round(fa_x * 1000, 1),
        "first_audio_icl_ms": round(fa_i * 1000, 1),
        "speaker_embedding_ms": round(spk_ms, 1),
        "voice_prompt_icl_ms": round(voice_ms, 1),
        "codec_offline_10s_rtf": round(codec_offline_s / args.codec_seconds, 4),
        # the 1-frame push in the decode loop (codec_ms_per_frame) over the offline per-frame cost (the 10 s decode)
        "codec_push_over_offline": round(statistics.median(codec) / (codec_offline_s / n_codec), 2),
        "load_s": round(load_s, 1),
        "rss_after_load_mb": round(rss_loaded, 0),
        "peak_rss_mb": round(peak_rss_mb(), 0),
    }
    if thr:
        n = args.sessions
        res["sessions"] = n
        res["audio_s_per_s_1_session"] = round(thr[1][0], 3)
        res[f"audio_s_per_s_{n}_sessions"] = round(thr[n][0], 3)
        res["sessions_speedup"] = round(thr[n][0] / thr[1][0], 2)
        res["sessions_speedup_steady"] = round(thr[n][1] / thr[1][1], 2)  # after the prefills
        res["sessions_speedup_steady_runs"] = runs  # each side-by-side run
    if graphs:
        res["graph_first_audio_ms"] = round(graphs[0] * 1000, 1)
        res["graph_frame_ms"] = round(statistics.median(graphs[1]) * 1000, 1)
        res["graph_rtf"] = round(statistics.median(graphs[1]) * 1000 / 80.0, 3)
    if official:
        res.update(official)
    if dev.type == "cuda":
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 0)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:24s} {v}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
