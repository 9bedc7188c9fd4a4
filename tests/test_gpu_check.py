"""`scripts/gpu_check.sh` and `scripts/gpu_bench.py`, the parts a CPU can run: a dry run (CPU,
tiny model, tiny counts) goes through the same steps and writes the JSON line with the keys of
the real run; the goal evaluation and the exit status; argument handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_bench  # noqa: E402


def test_dry_run_writes_the_json_line():
    p = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--frames", "3", "--eager-frames", "2", "--agg-frames", "2",
                        "--runs", "1", "--sessions", "1,2"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])  # the last line is the JSON object
    assert res["dry_run"] is True and res["error"] is None and res["exit_code"] == 0
    assert res["tests_rc"] == 0 and res["static_batch"] is True and res["device"] == "cpu"
    single = res["single"]
    assert single["frames"] >= 1 and single["audio_s"] == single["frames"] * 0.08
    assert single["first_audio_ms"] > 0 and single["x_realtime"] > 0
    assert set(res["aggregate"]) == {"1", "2"}
    for n, agg in res["aggregate"].items():
        assert agg["sessions"] == int(n) and agg["audio_s"] > 0 and agg["x_realtime_total"] > 0 and agg["min_session_x_realtime"] > 0
    assert set(res["goals"]) == set(gpu_bench.GOALS)
    assert res["goals"]["peak_gpu_mem_gb_one_session"] == {"value": None, "op": "<=", "target": 3.0, "met": False}  # no GPU
    assert res["goals"]["first_audio_ms"]["value"] == single["first_audio_ms"]
    for key in ("single_eager", "peak_gpu_mem_gb_all", "torch", "dtype", "cuda_graphs", "load_s", "warm_up_s", "goals_met"):
        assert key in res


def _result(**over):
    res = {"dry_run": False, "tests_rc": 0, "peak_gpu_mem_gb_one_session": 2.1,
           "single": {"x_realtime": 12.0, "first_audio_ms": 40.0, "p95_gap_ms": 20.0},
           "aggregate": {"16": {"x_realtime_total": 95.0}, "32": {"min_session_x_realtime": 1.5}}}
    for k, v in over.items():
        cur = res
        *path, last = k.split("__")
        for part in path:
            cur = cur[part]
        cur[last] = v
    res["goals"] = gpu_bench.evaluate(res)
    res["goals_met"] = all(g["met"] for g in res["goals"].values())
    return res


def test_goal_evaluation_and_exit_status():
    ok = _result()
    assert ok["goals_met"] and gpu_bench.exit_code(ok) == 0
    for over, name in [({"single__x_realtime": 9.9}, "single_stream_x_realtime"), ({"single__first_audio_ms": 50.1}, "first_audio_ms"),
                       ({"single__p95_gap_ms": 31.0}, "p95_gap_ms"), ({"aggregate__16__x_realtime_total": 79.0}, "sessions16_x_realtime_total"),
                       ({"aggregate__32__min_session_x_realtime": 0.99}, "sessions32_each_x_realtime"),
                       ({"peak_gpu_mem_gb_one_session": 3.2}, "peak_gpu_mem_gb_one_session"),
                       ({"peak_gpu_mem_gb_one_session": None}, "peak_gpu_mem_gb_one_session"),
                       ({"single__x_realtime": float("nan")}, "single_stream_x_realtime")]:
        res = _result(**over)
        missed = [n for n, g in res["goals"].items() if not g["met"]]
        assert missed == [name] and gpu_bench.exit_code(res) == 1
    # at the target is met
    assert _result(**{"single__first_audio_ms": 50.0})["goals_met"]
    # a failed test fails the check even when every goal is met; a dry run exits 0
    assert gpu_bench.exit_code(_result(tests_rc=1)) == 1
    assert gpu_bench.exit_code(_result(dry_run=True, **{"single__x_realtime": 0.1})) == 0
    # a missing section is an unmeasured value
    assert gpu_bench.evaluate({})["sessions16_x_realtime_total"] == {"value": None, "op": ">=", "target": 80.0, "met": False}


def test_argument_handling(capsys):
    a = gpu_bench.parse_args(["--dry-run"])
    assert (a.device, a.dtype, a.frames, a.sessions) == ("cpu", "float32", 6, [1, 4, 10, 16, 32])
    assert a.model.endswith("tests/fixtures/tiny/model")
    a = gpu_bench.parse_args(["--model", "/m"])
    assert (a.device, a.dtype, a.frames, a.agg_frames, a.cuda_graphs) == ("cuda", "bfloat16", 150, 60, "on")
    for bad in (["--dry-run", "--sessions", "1,x"], ["--dry-run", "--sessions", "0"], [], ["--dry-run", "--cuda-graphs", "maybe"]):
        with pytest.raises(SystemExit) as e:
            gpu_bench.parse_args(bad)
        assert e.value.code == 2
    assert "--model is required" in capsys.readouterr().err
    p = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--dry-run" in p.stdout


def test_skip_tests_leaves_tests_rc_null():
    p = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--skip-tests", "--frames", "2", "--eager-frames", "2",
                        "--agg-frames", "2", "--runs", "1", "--sessions", "1"], capture_output=True, text=True, timeout=600)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and res["tests_rc"] is None and set(res["aggregate"]) == {"1"}
