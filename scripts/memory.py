#!/usr/bin/env python
"""Resident memory of a loaded model, stage by stage (Linux: /proc/self/status).

    python scripts/memory.py --model DIR [--quantize w8a8] [--json] [--breakdown]

Loads the model, makes an ICL voice from 5 s of noise, streams a short sentence with it (greedy,
4 frames) and decodes 10 s of codes offline; after each stage prints VmRSS (resident now),
VmHWM (peak so far) and the stage's own peak (`stage_peak`: the peak is reset after each stage
through /proc/self/clear_refs where the kernel allows it) in MB. Only public API, so it runs on
any version of the package; the peak is what `scripts/bench.py` reports as `peak_rss_mb` for
the same work.

`--breakdown` adds, after each stage, the bytes the model's components hold (`held`): per
component its parameters and buffers, and the tensors its modules keep beside them (packed
copies, transformed weights, caches: whatever a module's attributes reach), each storage counted
once; `other` is the rest of the resident set (the interpreter, libraries, the C heap), and
`other_after_trim` the same after the C heap's free pages are given back (`malloc_trim`).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


_PEAK = {"overall": 0}


def rss() -> dict:
    """VmRSS and VmHWM (MB), VmHWM as the peak since the start (`stage_peak`: since the last
    call, where /proc/self/clear_refs can reset it)."""
    out = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) // 1024
    out["stage_peak"] = out["VmHWM"]
    _PEAK["overall"] = out["VmHWM"] = max(_PEAK["overall"], out["VmHWM"])
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak restarts from the resident set now
    except OSError:
        pass
    return out


def _storage(t: torch.Tensor) -> tuple[int, int]:
    """(bytes, identity) of a tensor's storage (opaque tensors: their elements)."""
    try:
        st = t.untyped_storage()
        return st.nbytes(), st.data_ptr()
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size(), id(t)


def _reach(obj, out: list, seen: set, depth: int = 0) -> None:
    """The tensors `obj` reaches through containers and plain objects (not through modules)."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        return
    if depth > 5 or id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), torch.nn.Module, type)):
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, (types.FunctionType, types.MethodType, types.ModuleType)):
        items = vars(obj).values()
    else:
        return
    for v in items:
        _reach(v, out, seen, depth + 1)


def held(tts) -> dict:
    """MB held per component: `<name>` (parameters and buffers) and `<name>.kept` (tensors its
    modules keep beside them); each storage counted once, in the first component that holds it."""
    tok = tts.speech_tokenizer
    comps = [("talker.text_embedding", getattr(tts.talker.model, "text_embedding", None)), ("talker", tts.talker),
             ("speaker_encoder", tts.speaker_encoder), ("codec.decoder", tok and tok.decoder),
             ("codec.encoder", tok and tok.__dict__.get("_encoder"))]
    seen, out = set(), {}
    for name, mod in comps:
        if mod is None:
            continue
        own, kept = [], []
        for m in mod.modules():
            own += [t for t in m._parameters.values() if t is not None] + [t for t in m._buffers.values() if t is not None]
            for k, v in vars(m).items():
                if k not in ("_parameters", "_buffers", "_modules"):
                    _reach(v, kept, set())
        for key, ts in ((name, own), (name + ".kept", kept)):
            total = 0
            for t in ts:
                n, ident = _storage(t)
                if ident not in seen:
                    seen.add(ident)
                    total += n
            if total:
                out[key] = total >> 20
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--quantize")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="MB held per model component after each stage")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    stages = {"start": rss()}
    from qwen3tts import Qwen3TTS

    tts = Qwen3TTS.from_pretrained(a.model, dtype=getattr(torch, a.dtype), quantize=a.quantize)
    parts = {}

    def mark(stage):
        stages[stage] = rss()
        if a.breakdown:
            parts[stage] = h = held(tts)
            h["other"] = stages[stage]["VmRSS"] - sum(h.values())
            from qwen3tts.weights import release_freed_memory

            release_freed_memory()
            h["other_after_trim"] = rss()["VmRSS"] - (stages[stage]["VmRSS"] - h["other"])

    mark("loaded")
    g = torch.Generator().manual_seed(0)
    ref = (torch.randn(5 * 24000, generator=g) * 0.1).numpy()
    voice = tts.create_voice_prompt((ref, 24000), ref_text="This is the reference clip that gives the voice.")
    mark("voice")
    for _ in tts.stream("Hello! This is a short sentence.", language="English", voice=voice, max_new_tokens=4,
                        do_sample=False, subtalker_dosample=False):
        pass
    mark("streamed")
    tts.speech_tokenizer.decode(torch.randint(0, tts.speech_tokenizer.config.decoder.codebook_size, (125, 16), generator=g))
    mark("offline_decode_10s")
    if a.json:
        print(json.dumps({"quantize": a.quantize or "none", "dtype": a.dtype, "stages": stages, **({"held_mb": parts} if parts else {})}))
    else:
        for k, v in stages.items():
            print(f"{k:22s} rss {v['VmRSS']:6d} MB   peak {v['VmHWM']:6d} MB   stage peak {v['stage_peak']:6d} MB")
            if k in parts:
                print("    " + "  ".join(f"{n} {mb}" for n, mb in parts[k].items()))


if __name__ == "__main__":
    main()
