"""scripts/bench.py on the tiny model: `--json` prints one object with the keys issue 6 asks
for, with real (positive, consistent) values, in float32 and in w8a8 (native decode steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["talker_ms_per_frame", "predictor_ms_per_frame", "codec_ms_per_frame", "frame_ms", "first_audio_ms", "rtf",
        "peak_rss_mb", "device", "dtype", "threads"]


@pytest.mark.parametrize("quantize", [None, "w8a8"])
def test_bench_json_has_the_figures(quantize):
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", str(TINY_MODEL), "--frames", "3", "--repeats", "1",
           "--sessions", "2", "--json"] + (["--quantize", quantize] if quantize else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(k in res for k in KEYS)
    assert res["device"] == "cpu" and res["dtype"] == ("float32+w8a8" if quantize else "float32") and res["threads"] >= 1
    assert res["native_decode"] is (quantize == "w8a8")
    parts = [res[k] for k in ("talker_ms_per_frame", "predictor_ms_per_frame", "codec_ms_per_frame")]
    assert all(p > 0 for p in parts) and res["frame_ms"] > 0 and res["first_audio_ms"] > 0 and res["peak_rss_mb"] > 100
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
