"""The native CPU library: `decode.c` and `codec.c` compiled on first use with the machine's C compiler.

Why: on CPU a decode step is a few large matrix-vector products and ~45 small ops per layer;
from Python each small op costs microseconds of dispatch, which added up to about a third of a
frame in w8a8 mode (docs/benchmarks.md). `decode.c` runs a whole stack of layers (w8a8
numerics, see quant.py) in one call, with OpenMP threads shared with torch's own pool;
`codec.c` has the codec decoder's SnakeBeta, the transforms of its Winograd convolutions (and
the whole convolution fused for <= 192 channels) and its few-row float32 linear.

Built with `cc -O3 -march=native -fopenmp -ffp-contract=off` into
`$QWEN3TTS_CACHE/native/` (default `~/.cache/qwen3tts/native/`), keyed by the source, the
flags, the compiler and the CPU's flags, so a rebuild happens only when one of those changes.
`QWEN3TTS_NATIVE=auto|on|off` (default auto): auto uses it when it builds and falls back to the
torch kernels otherwise (with one warning), on raises when it cannot build, off never builds.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

SOURCES = [Path(__file__).with_name(n) for n in ("decode.c", "codec.c")]
HEADERS = [Path(__file__).with_name("common.h")]
FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-std=gnu11", "-shared", "-fPIC"]  # + -march=<march>
MODES = ("auto", "on", "off")
KALIGN_DEFAULT = 64  # decode.c KALIGN: the int8 weights' rows are zero padded to a multiple of this

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


def native_mode() -> str:
    mode = os.environ.get("QWEN3TTS_NATIVE", "auto").lower()
    if mode not in MODES:
        raise ValueError(f"QWEN3TTS_NATIVE must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("QWEN3TTS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "qwen3tts") / "native"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return cc


def build(march: str = "native") -> Path:
    """Compile the sources for `-march=<march>` (if not cached) and return the shared library's
    path; raises RuntimeError. Other targets than the default are for tests (the portable
    C paths of CPUs without AVX-512 VNNI)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (install gcc, or set CC)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"C compiler {cc!r} does not run: {e}") from e
    src = b"\0".join(f.read_bytes() for f in [*SOURCES, *HEADERS])
    flags = [*FLAGS, f"-march={march}"]
    key = hashlib.sha256(b"\0".join([src, " ".join(flags).encode(), version.encode(), _cpu_flags().encode()])).hexdigest()[:16]
    out = _cache_dir() / f"qwen3tts_decode_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        so = Path(tmp) / out.name
        cmd = [cc, *flags, f"-I{SOURCES[0].parent}", *map(str, SOURCES), "-o", str(so), "-lm"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            detail = (r.stderr or r.stdout).strip()[-2000:]
            raise RuntimeError(f"compiling {' '.join(f.name for f in SOURCES)} with {cc} failed (exit {r.returncode})" + (f":\n{detail}" if detail else ""))
        os.replace(so, out)  # atomic: concurrent builders agree on the result
    return out


def load() -> ctypes.CDLL:
    """The loaded library (built on first use); raises RuntimeError when it cannot be had."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if native_mode() == "off":
            raise RuntimeError("the native decode library is switched off (QWEN3TTS_NATIVE=off)")
        if _error is not None:
            raise RuntimeError(_error)
        import torch  # noqa: F401  (torch first: the library then shares torch's libgomp)

        try:
            lib = open_library(build())
            if lib.qwen3tts_native_version() != 1:
                raise RuntimeError("native library version mismatch")
        except (RuntimeError, OSError) as e:
            _error = f"native CPU decode unavailable: {e}"
            raise RuntimeError(_error) from e
        _lib = lib
        return lib


def reset() -> None:
    """Forget the loaded library and any build error (tests; a changed environment)."""
    global _lib, _error
    with _lock:
        _lib, _error = None, None
    available._warned = False


def library() -> ctypes.CDLL | None:
    """The library when it can be used, else None. In auto mode a failure warns once; in `on`
    mode it raises."""
    mode = native_mode()
    if mode == "off":
        return None
    try:
        return load()
    except RuntimeError as e:
        if mode == "on":
            raise
        if not getattr(available, "_warned", False):
            available._warned = True
            warnings.warn(f"{e}; falling back to the torch kernels (slower)", RuntimeWarning, stacklevel=3)
        return None


def available() -> bool:
    """Can the native library be used? (see `library`)"""
    return library() is not None


# ---------------------------------------------------------------- C structures (decode.c)
class Lin(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("wsum", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("n", ctypes.c_int32), ("k", ctypes.c_int32), ("kp", ctypes.c_int32)]


class Layer(ctypes.Structure):
    _fields_ = [("in_norm", ctypes.c_void_p), ("post_norm", ctypes.c_void_p), ("qk_norm", ctypes.c_void_p),
                ("qkv", Lin), ("o", Lin), ("gate_up", Lin), ("down", Lin)]


class Stack(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int32), ("hidden", ctypes.c_int32), ("n_heads", ctypes.c_int32), ("n_kv", ctypes.c_int32),
                ("head_dim", ctypes.c_int32), ("inter", ctypes.c_int32), ("eps", ctypes.c_float),
                ("layers", ctypes.POINTER(Layer)), ("final_norm", ctypes.c_void_p)]


def open_library(path) -> ctypes.CDLL:
    """A built library loaded with its functions declared (`load` does this for the default build)."""
    lib = ctypes.CDLL(str(path))
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.qwen3tts_linear.argtypes = [ctypes.POINTER(Lin), P, I, P, I]
    lib.qwen3tts_linear.restype = None
    lib.qwen3tts_stack_decode.argtypes = [ctypes.POINTER(Stack), I, P, P, P, P, P, I, P, P, P, I]
    lib.qwen3tts_stack_decode.restype = None
    lib.qwen3tts_native_vnni.restype = I
    lib.qwen3tts_snake.argtypes = [P, P, P, P, ctypes.c_int64, I, I]
    lib.qwen3tts_snake.restype = None
    lib.qwen3tts_snake_ncw.argtypes = [P, P, P, P, ctypes.c_int64, I, ctypes.c_int64, I]
    lib.qwen3tts_snake_ncw.restype = None
    L = ctypes.c_int64
    lib.qwen3tts_wino_in.argtypes = [P, L, L, P, L, L, L, I, I, P, L, L, P, I, I, I, L, I]
    lib.qwen3tts_wino_in.restype = None
    lib.qwen3tts_wino_out.argtypes = [ctypes.POINTER(P), L, I, L, L, I, P, P, P, I, I, I, L, I]
    lib.qwen3tts_wino_out.restype = None
    lib.qwen3tts_wino_fused.argtypes = [P, L, L, P, L, L, I, I, I, P, P, P, P, L, L, L, P, I, I, I]
    lib.qwen3tts_wino_fused.restype = I
    lib.qwen3tts_linear_f32.argtypes = [P, I, I, P, P, I, P, I]
    lib.qwen3tts_linear_f32.restype = None
