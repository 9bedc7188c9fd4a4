"""scripts/bench.py on the tiny model: `--json` prints one object with the keys issues 6 and 15
ask for, with real (positive, consistent) values, in float32 and in w8a8 (native decode steps);
`--isa` runs the named native kernels, `--fastest` the fastest CPU mode; the weight floor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_MODEL
from native_isas import isas
from qwen3tts import native

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["talker_ms_per_frame", "predictor_ms_per_frame", "codec_ms_per_frame", "frame_ms", "first_audio_ms", "rtf",
        "peak_rss_mb", "device", "dtype", "threads", "isa", "weight_floor_ms", "talker_predictor_floor_ratio", "read_gbps",
        "weight_bytes_per_frame"]


def _run(*extra):
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", str(TINY_MODEL), "--frames", "3", "--repeats", "1", "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _tiny_weight_bytes(quantized: bool, int4: bool = False) -> int:
    """The tiny model's per-frame weights from its config: talker stack + codec head once, the
    predictor's stack 15 times, its 15 heads once (int8 + f32 scales per row, rows padded to 64;
    int4: rows padded to blocks of 16, half a byte per weight + a bfloat16 scale per 32; its output
    heads keep 8-bit weights)."""
    cfg = json.loads((TINY_MODEL / "config.json").read_text())["talker_config"]
    cp = cfg["code_predictor_config"]

    def lin(n, k, int4=int4):
        kp, n16 = -(-k // 64) * 64, -(-n // 16) * 16
        if int4:
            return n16 * kp // 2 + n16 * (kp // 32) * 2
        return n * kp + 4 * n if quantized else 4 * n * k

    def stack(c):
        H, D, I = c["hidden_size"], c["head_dim"], c["intermediate_size"]
        nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
        return c["num_hidden_layers"] * (lin((nh + 2 * nkv) * D, H) + lin(H, nh * D) + lin(2 * I, H) + lin(H, I))

    groups = cfg["num_code_groups"] - 1
    heads = lin(cfg["vocab_size"], cfg["hidden_size"], False) + groups * lin(cp["vocab_size"], cp["hidden_size"], False)  # 8-bit heads
    return stack(cfg) + groups * stack(cp) + heads


@pytest.mark.parametrize("quantize", [None, "w8a8"])
def test_bench_json_has_the_figures(quantize):
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", str(TINY_MODEL), "--frames", "3", "--repeats", "1",
           "--sessions", "2", "--json"] + (["--quantize", quantize] if quantize else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(k in res for k in KEYS)
    assert res["device"] == "cpu" and res["dtype"] == ("float32+w8a8" if quantize else "float32") and res["threads"] >= 1
    assert res["isa"] == native.isa() and res["torch_isa_env"] == {}  # the best this CPU has
    assert res["weight_bytes_per_frame"] == _tiny_weight_bytes(quantize == "w8a8")
    assert res["read_gbps"] > 0.5 and res["weight_floor_ms"] == pytest.approx(res["weight_bytes_per_frame"] / res["read_gbps"] / 1e6, rel=0.02)
    tp = res["talker_predictor_ms_per_frame"]
    assert tp > 0 and res["talker_predictor_floor_ratio"] == pytest.approx(tp / res["weight_floor_ms"], rel=0.02, abs=0.02)
    assert res["native_decode"] is (quantize == "w8a8")
    parts = [res[k] for k in ("talker_ms_per_frame", "predictor_ms_per_frame", "codec_ms_per_frame")]
    assert all(p > 0 for p in parts) and res["frame_ms"] > 0 and res["first_audio_ms"] > 0 and res["peak_rss_mb"] > 100
    offline_ms = res["codec_offline_10s_rtf"] * 80  # per 80 ms frame
    assert res["codec_push_over_offline"] == pytest.approx(res["codec_ms_per_frame"] / offline_ms, rel=0.05, abs=0.02)
    assert res["rtf"] > 0 and res["frames_timed"] == 3 and res["sessions"] == 2 and res["sessions_speedup"] > 0
    assert len(res["sessions_speedup_steady_runs"]) == 1 and res["sessions_speedup_steady_runs"][0] > 0


def test_bench_text_stream():
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", str(TINY_MODEL), "--text-stream", "40,1000", "--repeats", "1",
           "--text-lookahead", "2", "--threads", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["first_audio_whole_sentence_ms"] > 0 and res["text_stream_lookahead"] == 2 and res["text_stream_words"] > 50
    for rate in ("40", "1000"):
        x = res["text_stream"][rate]
        assert x["first_audio_ms"] > 0 and x["frames"] > res["text_stream_words"] and x["stalls"] >= 0 and x["stall_s"] >= 0
        assert x["gaps"] >= 0 and x["wall_s"] >= x["text_s"]
    assert res["text_stream_icl"]["first_audio_ms"] > 0 and res["text_stream_icl"]["words_per_s"] == 40


@pytest.mark.skipif("avx2" not in isas(), reason="needs a CPU with AVX2 (and the native library)")
def test_bench_isa_and_fastest():
    res = _run("--isa", "avx2", "--fastest", "--sessions", "0")
    assert res["isa"] == "avx2" and res["dtype"] == "float32+w4a8" and res["native_decode"] is True
    assert res["weight_bytes_per_frame"] == _tiny_weight_bytes(True, int4=True)
    assert res["torch_isa_env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    assert res["talker_predictor_floor_ratio"] > 0 and res["frames_timed"] == 3


def test_bench_refuses_an_isa_the_cpu_lacks():
    other = "avx512" if native.isa() == "neon" else "neon"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", str(TINY_MODEL), "--isa", other, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0 and f"isa={other}: this CPU cannot run it" in r.stderr
