#!/usr/bin/env python
"""Resident memory of a loaded model, stage by stage (Linux: /proc/self/status).

    python scripts/memory.py --model DIR [--quantize w8a8] [--json]

Loads the model, makes an ICL voice from 5 s of noise, streams a short sentence with it (greedy,
4 frames) and decodes 10 s of codes offline; after each stage prints VmRSS (resident now) and
VmHWM (peak so far) in MB. Only public API, so it runs on any version of the package; the peak
is what `scripts/bench.py` reports as `peak_rss_mb` for the same work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss() -> dict:
    out = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) // 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--quantize")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    stages = {"start": rss()}
    from qwen3tts import Qwen3TTS

    tts = Qwen3TTS.from_pretrained(a.model, dtype=getattr(torch, a.dtype), quantize=a.quantize)
    stages["loaded"] = rss()
    g = torch.Generator().manual_seed(0)
    ref = (torch.randn(5 * 24000, generator=g) * 0.1).numpy()
    voice = tts.create_voice_prompt((ref, 24000), ref_text="This is the reference clip that gives the voice.")
    stages["voice"] = rss()
    for _ in tts.stream("Hello! This is a short sentence.", language="English", voice=voice, max_new_tokens=4,
                        do_sample=False, subtalker_dosample=False):
        pass
    stages["streamed"] = rss()
    tts.speech_tokenizer.decode(torch.randint(0, 2048, (125, 16), generator=g))
    stages["offline_decode_10s"] = rss()
    if a.json:
        print(json.dumps({"quantize": a.quantize or "none", "dtype": a.dtype, "stages": stages}))
    else:
        for k, v in stages.items():
            print(f"{k:22s} rss {v['VmRSS']:6d} MB   peak {v['VmHWM']:6d} MB")


if __name__ == "__main__":
    main()
