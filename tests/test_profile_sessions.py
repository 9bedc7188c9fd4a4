"""scripts/profile_sessions.py on the tiny model: one JSON object splitting a 1-session and a
4-session `batch.step` into their parts, with real values (every part measured, none negative,
the rest of the step what is left of it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parent.parent


def test_profile_sessions_json():
    cmd = [sys.executable, str(ROOT / "scripts" / "profile_sessions.py"), "--model", str(TINY_MODEL), "--frames", "4",
           "--repeats", "1", "--threads", "1", "--clock", "cpu", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["sessions"] == 4 and res["threads"] == 1 and res["clock"] == "cpu"
    assert res["steps"] == [3, 3]  # frames 2..4 of each run: the first step holds the prefills
    ms = res["ms_per_step"]
    for part in ("talker_step", "code_predictor", "sampling", "codec_push", "step"):
        assert ms[part][0] > 0 and ms[part][1] > 0, part
    assert ms["state_stack"][0] == 0  # one stream is pushed on its own state
    assert all(v >= 0 for v in ms["other"])
    for i in range(2):  # the parts are inside the step
        assert ms["talker_step"][i] + ms["code_predictor"][i] + ms["codec_push"][i] <= ms["step"][i] * 1.5
    assert res["throughput_ratio"] > 0
