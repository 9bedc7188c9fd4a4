"""The CLI against the tiny model in a temp dir: WAV output (length, rate, equality with the
library), raw PCM, streaming, the voices store across processes, errors and exit codes."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import wave

import numpy as np
import pytest
import torch

from conftest import TINY, TINY_MODEL

TEXT = "Hello there, this is the command line."


def run(*args, cwd, env=None, input=None, timeout=120):
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "qwen3tts", *map(str, args)], cwd=cwd, env=e, input=input,
                          capture_output=True, timeout=timeout)


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def lib():
    from qwen3tts import Qwen3TTS

    return Qwen3TTS.from_pretrained(TINY_MODEL)


def pcm16(x):
    return (np.clip(x.numpy(), -1, 1) * 32767.0).round().astype("<i2")


def test_say_wav_equals_library(tmp_path, lib):
    r = run("say", TEXT, "--model", TINY_MODEL, "--greedy", "--max-new-tokens", 12, "--ref-audio", TINY / "reference.wav",
            "--ref-text", "Okay, this is the reference recording used for voice cloning.", "-o", "a.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    sr, pcm = read_wav(tmp_path / "a.wav")
    voice = lib.create_voice_prompt(TINY / "reference.wav", ref_text="Okay, this is the reference recording used for voice cloning.")
    want = lib.generate(TEXT, voice=voice, do_sample=False, subtalker_dosample=False, max_new_tokens=12)
    assert sr == 24000 and len(pcm) == want.audio.shape[0] and len(pcm) >= 1920
    assert np.array_equal(pcm, pcm16(want.audio))


@pytest.mark.parametrize("dtype, mode", [("bfloat16", "int8"), ("float32", "w8a8")])
def test_say_quantized_equals_library(tmp_path, dtype, mode):
    """The fast CPU modes from the command line: --dtype bfloat16 --quantize int8, --quantize w8a8."""
    from qwen3tts import Qwen3TTS
    from qwen3tts.quant import linear_class

    r = run("say", TEXT, "--model", TINY_MODEL, "--greedy", "--max-new-tokens", 8, "--dtype", dtype, "--quantize", mode,
            "--no-voice", "-o", "q.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    sr, pcm = read_wav(tmp_path / "q.wav")
    fast = Qwen3TTS.from_pretrained(TINY_MODEL, dtype=getattr(torch, dtype), quantize=mode)
    assert isinstance(fast.talker.model.layers[0].mlp.down_proj, linear_class(mode, getattr(torch, dtype)))
    want = fast.generate(TEXT, do_sample=False, subtalker_dosample=False, max_new_tokens=8)
    assert sr == 24000 and len(pcm) == want.audio.shape[0] == 7 * 1920
    assert np.abs(pcm.astype(int) - pcm16(want.audio.float()).astype(int)).max() <= 1
    bad = run("say", TEXT, "--model", TINY_MODEL, "--quantize", "int4", "-o", "x.wav", cwd=tmp_path)
    assert bad.returncode == 2 and b"int4" in bad.stderr


def test_say_stdout_pcm_stream_and_stdin(tmp_path, lib):
    r = run("say", "-", "--model", TINY_MODEL, "--greedy", "--max-new-tokens", 8, "--stdout-pcm", "--stream", "--no-voice", cwd=tmp_path,
            input=TEXT.encode())
    assert r.returncode == 0, r.stderr.decode()
    pcm = np.frombuffer(r.stdout, dtype="<i2")
    want = lib.generate(TEXT, voice=None, do_sample=False, subtalker_dosample=False, max_new_tokens=8)
    assert len(pcm) == want.audio.shape[0] == 7 * 1920
    assert np.abs(pcm.astype(int) - pcm16(want.audio).astype(int)).max() <= 1  # stream vs offline: fp noise only
    assert b"warning: piece 1: no end of speech" in r.stderr
    # stdin with --stream is spoken as it arrives (stream_text): nothing at all is still an error
    r = run("say", "-", "--model", TINY_MODEL, "--greedy", "--stdout-pcm", "--stream", cwd=tmp_path, input=b"  \n")
    assert r.returncode != 0 and b"text is empty" in r.stderr and not r.stdout


def test_voices_across_processes(tmp_path):
    vd = tmp_path / "voices"
    r = run("voices", "add", TINY / "reference.wav", "--transcript", "Okay, this is the reference recording used for voice cloning.",
            "--name", "Tiny Ref", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.decode().strip() == "tiny-ref", r.stderr.decode()
    r = run("voices", "list", "--voices-dir", vd, cwd=tmp_path)
    assert r.stdout.decode().startswith("tiny-ref\tTiny Ref\ticl\tauto\t3.0s")
    say = ["say", "Hi.", "--voice", "tiny-ref", "--voices-dir", vd, "--model", TINY_MODEL, "--greedy", "--max-new-tokens", 4, "-v"]
    r1 = run(*say, "-o", "1.wav", cwd=tmp_path)
    assert b"prompt computed" in r1.stderr, r1.stderr.decode()
    prompt_file = vd / "tiny-ref" / "prompt.safetensors"
    mtime = prompt_file.stat().st_mtime_ns
    r2 = run(*say, "-o", "2.wav", cwd=tmp_path)  # a new process: the prompt comes from disk
    assert b"prompt loaded from cache" in r2.stderr and prompt_file.stat().st_mtime_ns == mtime
    assert read_wav(tmp_path / "1.wav")[1].tobytes() == read_wav(tmp_path / "2.wav")[1].tobytes()
    # a second voice, then break the first one's manifest: clear error, the other still loads
    r = run("voices", "add", TINY / "reference.wav", "--id", "second", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 0
    (vd / "tiny-ref" / "manifest.json").write_text("{broken")
    r = run("voices", "list", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.decode().startswith("second\t") and b"unreadable manifest.json" in r.stderr
    r = run(*say, "-o", "3.wav", cwd=tmp_path)
    assert r.returncode == 1 and b"error: voice 'tiny-ref' has an unreadable manifest.json" in r.stderr and b"Traceback" not in r.stderr
    r = run("voices", "rm", "second", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 0 and not (vd / "second").exists()


def test_errors_and_exit_codes(tmp_path):
    r = run("say", "  ", "--model", TINY_MODEL, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.decode().strip() == "error: text is empty"
    r = run("say", "Hi", "--model", TINY_MODEL, "--language", "Klingon", cwd=tmp_path)
    assert r.returncode == 1 and b"unsupported language 'Klingon'" in r.stderr and b"Traceback" not in r.stderr
    r = run("say", "Hi", "--model", tmp_path / "nowhere", cwd=tmp_path)
    assert r.returncode == 1 and b"error:" in r.stderr and b"Traceback" not in r.stderr
    r = run("voices", "add", tmp_path / "missing.wav", "--voices-dir", tmp_path / "v", cwd=tmp_path)
    assert r.returncode == 1 and b"audio file not found" in r.stderr
    (tmp_path / "short.wav").write_bytes(b"RIFF....not audio")
    r = run("voices", "add", tmp_path / "short.wav", "--voices-dir", tmp_path / "v", cwd=tmp_path)
    assert r.returncode == 1 and b"could not read the audio clip" in r.stderr
    r = run("frobnicate", cwd=tmp_path)
    assert r.returncode == 2
    r = run("say", "--help", cwd=tmp_path)
    assert r.returncode == 0 and b"--ref-audio" in r.stdout and b"--stdout-pcm" in r.stdout


def test_offline_download_fails_fast(tmp_path):
    # no timing assertion (noisy shared cores); a hang fails through the subprocess timeout, and
    # the measured wall time (about 2.5 s including interpreter start) is in the closing note
    r = run("download", "Qwen/Qwen3-TTS-12Hz-0.6B-Base", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
            timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err
    assert "pass a local model directory" in err and "connect to the network" in err


SUMMARY = re.compile(r"wrote (.+): (\d+\.\d\d) s of audio, wall (\d+\.\d\d) s \(synthesis (\d+\.\d\d) s\), RTF (\d+\.\d\d), (.+)")


def test_say_default_is_builtin_voice_and_ends_with_summary(tmp_path, lib):
    """No voice named: the built-in voice (same audio as the library's voice="default", not the
    no-reference audio); stderr (not a terminal: no bar) ends with the summary line."""
    r = run("say", TEXT, "--model", TINY_MODEL, "--greedy", "--max-new-tokens", 6, "-o", "d.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "\r" not in err and "[" not in err.split("wrote")[0]  # no progress bar off a terminal
    sr, pcm = read_wav(tmp_path / "d.wav")
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=6)
    want = lib.generate(TEXT, voice="default", **kw)
    bare = lib.generate(TEXT, voice=None, **kw)
    assert np.array_equal(pcm, pcm16(want.audio)) and not np.array_equal(pcm, pcm16(bare.audio))
    last = err.strip().splitlines()[-1]
    m = SUMMARY.fullmatch(last)
    assert m, last
    assert m.group(1) == "d.wav" and float(m.group(2)) == round(len(pcm) / 24000, 2) == 0.40
    wall, synth, rtf = float(m.group(3)), float(m.group(4)), float(m.group(5))
    assert wall >= synth > 0 and abs(rtf - synth / 0.4) <= 0.02  # both rounded to 2 decimals
    assert m.group(6).startswith("1 warning: piece 1: no end of speech")
    q = run("say", TEXT, "--model", TINY_MODEL, "--greedy", "--max-new-tokens", 6, "-o", "e.wav", "--quiet", cwd=tmp_path)
    assert q.returncode == 0 and b"wrote" not in q.stderr and read_wav(tmp_path / "e.wav")[1].tobytes() == pcm.tobytes()


def test_progress_bar_on_a_terminal(tmp_path):
    """stderr a terminal (a pty): the bar is drawn in place (carriage returns), then cleared, and
    the summary line follows; --quiet draws nothing."""
    import pty

    def on_pty(*extra):
        master, slave = pty.openpty()
        e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        p = subprocess.Popen([sys.executable, "-m", "qwen3tts", "say", TEXT * 3, "--model", str(TINY_MODEL), "--greedy",
                              "--max-new-tokens", "30", "--stream", "-o", "p.wav", *extra], cwd=tmp_path, env=e,
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        buf = b""
        while True:
            try:
                d = os.read(master, 4096)
            except OSError:
                break
            if not d:
                break
            buf += d
        os.close(master)
        assert p.wait(120) == 0, buf.decode(errors="replace")
        return buf.decode(errors="replace")

    out = on_pty()
    assert "say [" in out and "%" in out and "s of audio" in out and "\r" in out
    assert SUMMARY.fullmatch(out.strip().splitlines()[-1].split("\r")[-1].strip()), out[-300:]
    out = on_pty("--quiet")
    assert "say [" not in out and "wrote" not in out


def test_builtin_voice_in_voices_cli(tmp_path):
    vd = tmp_path / "v"
    r = run("voices", "list", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.decode() == "arctic-slt\tSLT (CMU ARCTIC, built-in)\txvector\tEnglish\t3.1s\tbuilt-in\n"
    r = run("voices", "rm", "arctic-slt", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 1 and b"built in and cannot be deleted" in r.stderr
    r = run("voices", "add", TINY / "reference.wav", "--id", "mine", "--voices-dir", vd, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == b"mine\n"
    assert r.stderr.decode().startswith("added voice 'mine' (xvector, 3.0 s clip)")
