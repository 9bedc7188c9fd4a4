"""Runtime options (qwen3tts/options.py): every environment variable the package reads is
parsed there, once; nowhere else in the package reads the environment (a scan of the sources)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qwen3tts
from qwen3tts import options

ROOT = Path(qwen3tts.__file__).resolve().parent
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _env_uses(tree: ast.AST) -> list[int]:
    """Lines that touch the process environment: `os.environ`, `os.getenv`, ..., a bare
    `environ` name, or `from os import environ`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id in ENV_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.arg) and node.arg in ENV_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in ENV_NAMES for a in node.names):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_environment_read_outside_the_options_module():
    found = {}
    for f in sorted(ROOT.rglob("*.py")):
        if f == ROOT / "options.py":
            continue
        lines = _env_uses(ast.parse(f.read_text(encoding="utf-8")))
        if lines:
            found[str(f.relative_to(ROOT))] = lines
    assert found == {}
    assert _env_uses(ast.parse("import os\nx = os.environ.get('A')\ny = os.getenv('B')\nfrom os import environ")) == [2, 3, 4]
    assert _env_uses(ast.parse((ROOT / "options.py").read_text(encoding="utf-8")))  # the scan does see a real use


def test_defaults_and_values():
    d = options.from_env({})
    assert d == options.RuntimeOptions()
    assert (d.native, d.isa, d.cache, d.onednn, d.winograd, d.kernels, d.cuda_graphs) == ("auto", "auto", None, True, True, "auto", None)
    assert (d.wyoming_uri, d.greedy, d.voices_dir, d.xdg_data_home, d.cc, d.triton_interpret) == ("tcp://127.0.0.1:10200", False, None, None, None, False)
    o = options.from_env({
        "QWEN3TTS_NATIVE": "OFF", "QWEN3TTS_ISA": " avx2 ", "QWEN3TTS_CACHE": "/c", "QWEN3TTS_ONEDNN": "0", "QWEN3TTS_WINOGRAD": "false",
        "QWEN3TTS_KERNELS": "torch", "QWEN3TTS_CUDA_GRAPHS": "on", "QWEN3TTS_WYOMING_URI": "unix:///s", "QWEN3TTS_GREEDY": "1",
        "QWEN3TTS_VOICES_DIR": "~/v", "XDG_DATA_HOME": "/x", "CC": "clang", "TRITON_INTERPRET": "1", "QWEN3TTS_PORT": "8080", "HOME": "/h",
    })
    assert (o.native, o.isa, o.cache, o.onednn, o.winograd, o.kernels, o.cuda_graphs) == ("off", "avx2", "/c", False, False, "torch", "on")
    assert (o.wyoming_uri, o.greedy, o.voices_dir, o.xdg_data_home, o.cc, o.triton_interpret) == ("unix:///s", True, "~/v", "/x", "clang", True)
    assert o.var("QWEN3TTS_PORT") == "8080" and o.var("QWEN3TTS_HOST") is None and o.var("HOME") is None  # only ours are kept
    assert options.from_env({"QWEN3TTS_ISA": "", "QWEN3TTS_GREEDY": "0", "QWEN3TTS_ONEDNN": "on"}).isa == "auto"
    assert not options.from_env({"QWEN3TTS_GREEDY": "0"}).greedy and options.from_env({"QWEN3TTS_ONEDNN": "on"}).onednn


@pytest.mark.parametrize("name,value,message", [
    ("QWEN3TTS_NATIVE", "fast", "QWEN3TTS_NATIVE must be one of auto, on, off, not 'fast'"),
    ("QWEN3TTS_ISA", "sse9", "QWEN3TTS_ISA must be one of auto, portable, avx2, avx512, neon, not 'sse9'"),
    ("QWEN3TTS_ONEDNN", "maybe", "QWEN3TTS_ONEDNN must be 0 or 1, not 'maybe'"),
    ("QWEN3TTS_WINOGRAD", "2", "QWEN3TTS_WINOGRAD must be 0 or 1, not '2'"),
    ("QWEN3TTS_KERNELS", "cuda", "QWEN3TTS_KERNELS must be one of auto, torch, triton, not 'cuda'"),
])
def test_a_bad_value_is_one_error_naming_the_variable(name, value, message):
    with pytest.raises(ValueError) as e:
        options.from_env({name: value})
    assert str(e.value) == message


def test_parsed_once_and_overridden(monkeypatch):
    monkeypatch.setenv("QWEN3TTS_WINOGRAD", "0")
    first = options.reload()
    assert options.current() is first and not first.winograd
    monkeypatch.setenv("QWEN3TTS_WINOGRAD", "1")
    assert options.current() is first  # not re-read
    with options.override(winograd=True, native="off") as o:
        assert options.current() is o and o.winograd and o.native == "off" and o.isa == first.isa
        with pytest.raises(ValueError, match="native must be one of auto, on, off"):
            with options.override(native="sometimes"):
                pass
    assert options.current() is first
    with pytest.raises(TypeError):
        options.current().replace(nonsense=1)
    with pytest.raises(Exception):
        first.native = "on"  # frozen
    prev = options.set_current(None)
    assert prev is first and options.current().winograd  # parsed again: the environment now says 1
