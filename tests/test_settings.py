"""One settings table for the CLI and the server (qwen3tts/settings.py): the same defaults,
environment variables and voices directory; a voice added with `qwen3tts voices add` is listed
by `python -m qwen3tts.serve` started with its defaults (real processes, a temp HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


from conftest import TINY
from server_util import free_port

from qwen3tts import cli, options, serve
from qwen3tts.settings import MODEL_SETTINGS, default_voices_dir

TRANSCRIPT = "Okay, this is the reference recording used for voice cloning."


def _env(home: Path, **extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTS_") and k != "XDG_DATA_HOME"}
    e.update(HOME=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return e


def _cli(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "qwen3tts", *map(str, args)], env=env, cwd=cwd, capture_output=True, timeout=120)


def _server_voices(env, cwd) -> list[str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "qwen3tts.serve", "--port", str(port)], env=env, cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/voices", timeout=1).read())
                return [v["id"] for v in body["voices"] if not v.get("builtIn")]  # the built-in voice is not in the store
            except OSError:
                if p.poll() is not None:
                    raise AssertionError(f"server exited: {p.stderr.read().decode()}")
                time.sleep(0.1)
        raise AssertionError("server did not answer")
    finally:
        p.terminate()
        p.wait(20)


@pytest.mark.parametrize("xdg", [False, True])
def test_cli_voice_is_listed_by_default_server(tmp_path, xdg):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = _env(home, **({"XDG_DATA_HOME": str(tmp_path / "data")} if xdg else {}))
    r = _cli("voices", "add", TINY / "reference.wav", "--transcript", TRANSCRIPT, "--name", "Shared Voice", env=env, cwd=work)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "shared-voice"
    store = (tmp_path / "data" if xdg else home / ".local" / "share") / "qwen3tts" / "voices"
    assert json.loads((store / "shared-voice" / "manifest.json").read_text())["name"] == "Shared Voice"
    assert not (work / "voices").exists()  # nothing in the working directory any more
    assert _server_voices(env, work) == ["shared-voice"]  # the server started with its defaults sees it


def test_default_voices_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("QWEN3TTS_VOICES_DIR", raising=False)
    options.reload()
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    options.reload()
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    options.reload()
    assert default_voices_dir() == tmp_path / "h" / ".local" / "share" / "qwen3tts" / "voices"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    options.reload()
    assert default_voices_dir() == tmp_path / "h" / ".local" / "share" / "qwen3tts" / "voices"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    options.reload()
    assert default_voices_dir() == tmp_path / "x" / "qwen3tts" / "voices"
    monkeypatch.setenv("QWEN3TTS_VOICES_DIR", str(tmp_path / "v"))
    options.reload()
    assert default_voices_dir() == tmp_path / "v"
    # both programs read it when they parse, with the same value
    assert serve.parse_args([]).voices_dir == str(tmp_path / "v")
    assert cli.build_parser().parse_args(["voices", "list"]).voices_dir == str(tmp_path / "v")


def test_same_table_same_defaults_and_env(monkeypatch):
    for s in MODEL_SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    a, c = serve.parse_args([]), cli.build_parser().parse_args(["say", "hi"])
    for s in MODEL_SETTINGS:
        key = s.name.replace("-", "_")
        assert getattr(a, key) == getattr(c, key) == s.default
    assert [row[0] for row in serve.FLAGS][:5] == ["model", "voices-dir", "device", "dtype", "quantize"]
    for name, typ, default, help_ in serve.FLAGS:  # still the (name, type, default, help) rows
        assert isinstance(name, str) and callable(typ) and isinstance(help_, str)
    monkeypatch.setenv("QWEN3TTS_DTYPE", "bfloat16")
    options.reload()
    monkeypatch.setenv("QWEN3TTS_QUANTIZE", "w8a8")
    options.reload()
    monkeypatch.setenv("QWEN3TTS_MODEL", "/some/model")
    options.reload()
    for args in (serve.parse_args([]), cli.build_parser().parse_args(["say", "hi"])):
        assert (args.dtype, args.quantize, args.model) == ("bfloat16", "w8a8", "/some/model")
    assert cli.build_parser().parse_args(["say", "hi", "--dtype", "float16"]).dtype == "float16"  # the flag wins
    monkeypatch.setenv("QWEN3TTS_GREEDY", "1")
    options.reload()
    assert serve.parse_args([]).greedy is True


def test_bad_environment_value_is_a_usage_error(tmp_path):
    env = _env(tmp_path, QWEN3TTS_QUANTIZE="int4")
    for cmd in (["-m", "qwen3tts.serve"], ["-m", "qwen3tts", "say", "hi"]):
        r = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, timeout=60)
        assert r.returncode == 2
        assert "QWEN3TTS_QUANTIZE must be one of none, int8, w8a8, w4a8, not 'int4'" in r.stderr.decode()
    r = subprocess.run([sys.executable, "-m", "qwen3tts.serve"], env=_env(tmp_path, QWEN3TTS_PORT="eighty"), capture_output=True, timeout=60)
    assert r.returncode == 2 and "QWEN3TTS_PORT must be an int, not 'eighty'" in r.stderr.decode()
