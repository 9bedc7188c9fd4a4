"""The native CPU library: `decode.c`, `codec.c` and `rows.c` compiled on first use with the machine's C compiler.

Why: on CPU a decode step is a few large matrix-vector products and ~45 small ops per layer;
from Python each small op costs microseconds of dispatch, which added up to about a third of a
frame in w8a8 mode (docs/benchmarks.md). `decode.c` runs a whole stack of layers (w8a8
numerics, see quant.py) in one call, with OpenMP threads shared with torch's own pool;
`codec.c` has the codec decoder's SnakeBeta, the transforms of its Winograd convolutions (and
the whole convolution fused for <= 192 channels), its depthwise convolution and overlap-add;
`rows.c` its few-row products (float32, int8 and int16 weights) and its transformer's pass.

One build serves every CPU of an architecture: the kernels are compiled once per instruction
set (isa_avx512.c, isa_avx2.c, isa_portable.c on x86-64; isa_neon.c, isa_portable.c on
aarch64; each sets its compiler target for itself) and dispatch.c picks one at run time, the best
the CPU has unless `QWEN3TTS_ISA=avx512|avx2|portable|neon` (read once, at load) forces another;
`set_isa` switches at run time (tests, `scripts/bench.py --isa`), `isa()` names the one in use.
Built with `cc -O3 -fopenmp -ffp-contract=off` (no -march) into `$QWEN3TTS_CACHE/native/`
(default `~/.cache/qwen3tts/native/`), keyed by the sources, the flags and the compiler, so a
rebuild happens only when one of those changes. At load the C structures' layout
(`qwen3tts_abi`) is checked against the ctypes ones here.
`QWEN3TTS_NATIVE=auto|on|off` (default auto): auto uses it when it builds and falls back to the
torch kernels otherwise (with one warning), on raises when it cannot build, off never builds.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from .. import options

_DIR = Path(__file__).parent
KERNELS = [_DIR / n for n in ("decode.c", "w8_avx2.c", "codec.c", "rows.c", "q4.c", "common.h", "vec.h")]  # included by each isa_<name>.c
UNITS = {"x86_64": ["dispatch.c", "isa_avx512.c", "isa_avx2.c", "isa_portable.c"], "aarch64": ["dispatch.c", "isa_neon.c", "isa_portable.c"]}
FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-std=gnu11", "-shared", "-fPIC"]
MODES = options.NATIVE_MODES
ISAS = options.ISAS  # common.h Q_PORTABLE .. Q_NEON
KALIGN_DEFAULT = 64  # decode.c KALIGN: the int8 weights' rows are zero padded to a multiple of this

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


def native_mode() -> str:
    """`QWEN3TTS_NATIVE` (options.RuntimeOptions.native): auto | on | off."""
    return options.current().native


def isa_option() -> str:
    """`QWEN3TTS_ISA` (default auto: the best the CPU has); applied when the library is loaded."""
    return options.current().isa


def _machine(machine: str | None = None) -> str:
    m = (machine or platform.machine()).lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _cache_dir() -> Path:
    root = options.current().cache
    return (Path(root) if root else Path.home() / ".cache" / "qwen3tts") / "native"


def _compiler() -> str | None:
    cc = options.current().cc or shutil.which("cc") or shutil.which("gcc")
    return cc


def build(cc: str | None = None, machine: str | None = None, extra: tuple[str, ...] = ()) -> Path:
    """Compile the sources (if not cached) and return the shared library's path; raises
    RuntimeError. `cc` / `machine` / `extra` flags: another compiler for another architecture
    (the aarch64 test cross-compiles)."""
    machine = _machine(machine)
    if machine not in UNITS:
        raise RuntimeError(f"the native kernels are written for {' and '.join(UNITS)}, not {machine}")
    units = [_DIR / n for n in UNITS[machine]]
    cc = cc or _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (install gcc, or set CC)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"C compiler {cc!r} does not run: {e}") from e
    src = b"\0".join(f.read_bytes() for f in [*units, *KERNELS])
    flags = [*FLAGS, *extra]
    key = hashlib.sha256(b"\0".join([src, " ".join(flags).encode(), cc.encode(), version.encode(), machine.encode()])).hexdigest()[:16]
    out = _cache_dir() / f"qwen3tts_native_{machine}_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        so = Path(tmp) / out.name
        cmd = [cc, *flags, f"-I{_DIR}", *map(str, units), "-o", str(so), "-lm"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            detail = (r.stderr or r.stdout).strip()[-2000:]
            raise RuntimeError(f"compiling {' '.join(f.name for f in units)} with {cc} failed (exit {r.returncode})" + (f":\n{detail}" if detail else ""))
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

        want = isa_option()  # a bad value raises ValueError, before anything is built
        try:
            lib = open_library(build())
        except (RuntimeError, OSError) as e:
            _error = f"native CPU decode unavailable: {e}"
            raise RuntimeError(_error) from e
        if want == "auto":  # (a library loaded before shares the process's one copy: set it either way)
            lib.qwen3tts_set_isa(-1)
        else:
            _set(lib, want, "QWEN3TTS_ISA")
        _lib = lib
        return lib


def _set(lib: ctypes.CDLL, name: str, what: str) -> None:
    if name not in ISAS:
        raise ValueError(f"{what} must be one of {', '.join(ISAS)}, not {name!r}")
    if lib.qwen3tts_set_isa(ISAS.index(name)) != 0:
        raise ValueError(f"{what}={name}: this CPU cannot run it (it can: {', '.join(supported_isas(lib))})")


def supported_isas(lib: ctypes.CDLL | None = None) -> list[str]:
    """The instruction sets the library can run on this CPU, best first."""
    lib = lib or load()
    return [n for i, n in reversed(list(enumerate(ISAS))) if lib.qwen3tts_isa_supported(i)]


def isa(lib: ctypes.CDLL | None = None) -> str:
    """The instruction set the native kernels run now: avx512, avx2, portable or neon."""
    lib = lib or load()
    return ISAS[lib.qwen3tts_isa()]


def set_isa(name: str | None, lib: ctypes.CDLL | None = None) -> str:
    """Run the native kernels with `name` (None or "auto": the best the CPU has) from now on, in
    every thread; returns the one before. A set the CPU lacks raises ValueError."""
    lib = lib or load()
    before = isa(lib)
    if name in (None, "auto"):
        lib.qwen3tts_set_isa(-1)
    else:
        _set(lib, name, "isa")
    return before


def reset() -> None:
    """Forget the loaded library and any build error (tests; a changed environment)."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            _lib.qwen3tts_set_isa(-1)
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
                ("n", ctypes.c_int32), ("k", ctypes.c_int32), ("kp", ctypes.c_int32), ("bits", ctypes.c_int32), ("group", ctypes.c_int32)]


class Layer(ctypes.Structure):
    _fields_ = [("in_norm", ctypes.c_void_p), ("post_norm", ctypes.c_void_p), ("qk_norm", ctypes.c_void_p),
                ("qkv", Lin), ("o", Lin), ("gate_up", Lin), ("down", Lin)]


class Stack(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int32), ("hidden", ctypes.c_int32), ("n_heads", ctypes.c_int32), ("n_kv", ctypes.c_int32),
                ("head_dim", ctypes.c_int32), ("inter", ctypes.c_int32), ("eps", ctypes.c_float),
                ("layers", ctypes.POINTER(Layer)), ("final_norm", ctypes.c_void_p)]


# the layout qwen3tts_abi reports, in its order: (structure, field or None for its size)
ABI_FIELDS = [(Lin, None), *((Lin, f) for f, _ in Lin._fields_), (Layer, None), *((Layer, f) for f, _ in Layer._fields_),
              (Stack, None), *((Stack, f) for f, _ in Stack._fields_)]
VERSION = 2


def check_abi(lib: ctypes.CDLL) -> None:
    """The C structures' sizes and offsets equal the ctypes ones; RuntimeError naming the first
    field that differs."""
    n = len(ABI_FIELDS)
    out = (ctypes.c_int32 * n)()
    count = lib.qwen3tts_abi(out, n)
    if count != n:
        raise RuntimeError(f"native library ABI mismatch: it reports {count} sizes / offsets, the loader knows {n}")
    for (st, field), got in zip(ABI_FIELDS, out):
        want = ctypes.sizeof(st) if field is None else getattr(st, field).offset
        if got != want:
            what = f"sizeof({st.__name__})" if field is None else f"offsetof({st.__name__}, {field})"
            raise RuntimeError(f"native library ABI mismatch: {what} is {got} in C, {want} in native/__init__.py")


def open_library(path) -> ctypes.CDLL:
    """A built library loaded with its functions declared, its version and structure layout
    checked (`load` does this for the default build)."""
    lib = ctypes.CDLL(str(path))
    _declare(lib)
    if lib.qwen3tts_native_version() != VERSION:
        raise RuntimeError(f"native library version {lib.qwen3tts_native_version()}, the loader expects {VERSION}")
    check_abi(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.qwen3tts_linear.argtypes = [ctypes.POINTER(Lin), P, I, P, I]
    lib.qwen3tts_linear.restype = None
    lib.qwen3tts_stack_decode.argtypes = [ctypes.POINTER(Stack), I, P, P, P, P, P, I, P, P, P, I]
    lib.qwen3tts_stack_decode.restype = None
    lib.qwen3tts_native_vnni.restype = I
    lib.qwen3tts_wino_fused_available.restype = I
    lib.qwen3tts_isa.restype = I
    lib.qwen3tts_isa_supported.argtypes = [I]
    lib.qwen3tts_isa_supported.restype = I
    lib.qwen3tts_set_isa.argtypes = [I]
    lib.qwen3tts_set_isa.restype = I
    lib.qwen3tts_abi.argtypes = [ctypes.POINTER(ctypes.c_int32), I]
    lib.qwen3tts_abi.restype = I
    lib.qwen3tts_snake.argtypes = [P, P, P, P, ctypes.c_int64, I, I]
    lib.qwen3tts_snake.restype = None
    lib.qwen3tts_snake_ncw.argtypes = [P, P, P, P, ctypes.c_int64, I, ctypes.c_int64, I]
    lib.qwen3tts_snake_ncw.restype = None
    L = ctypes.c_int64
    lib.qwen3tts_dwconv.argtypes = [P, L, L, P, L, L, I, I, P, I, I, P, P, I]
    lib.qwen3tts_dwconv.restype = None
    lib.qwen3tts_overlap_add.argtypes = [P, I, L, I, I, I, P, L, P, P, I]
    lib.qwen3tts_overlap_add.restype = None
    lib.qwen3tts_wino_in.argtypes = [P, L, L, P, L, L, L, I, I, P, L, L, P, I, I, I, L, I]
    lib.qwen3tts_wino_in.restype = None
    lib.qwen3tts_wino_out.argtypes = [ctypes.POINTER(P), L, I, L, L, I, P, P, P, I, I, I, L, I]
    lib.qwen3tts_wino_out.restype = None
    lib.qwen3tts_wino_fused.argtypes = [P, L, L, P, L, L, I, I, I, P, P, P, P, L, L, L, P, I, I, ctypes.POINTER(P), L, I]
    lib.qwen3tts_wino_fused.restype = I
    lib.qwen3tts_linear_f32.argtypes = [P, I, I, P, P, I, P, I]
    lib.qwen3tts_linear_f32.restype = None
    lib.qwen3tts_linear_w8f.argtypes = [P, I, I, P, L, P, P, I, P, I]
    lib.qwen3tts_linear_w8f.restype = None
    lib.qwen3tts_linear_w16f.argtypes = [I, P, L, I, I, ctypes.POINTER(P), ctypes.POINTER(P), P, I, P, L, I]
    lib.qwen3tts_linear_w16f.restype = I
    lib.qwen3tts_q4_gemm.argtypes = [ctypes.POINTER(Lin), P, P, I, P, I]
    lib.qwen3tts_q4_gemm.restype = None
    lib.qwen3tts_codec_stack.argtypes = [P, I, P, ctypes.c_float, P, P, I, I, P, P, L, P, P, I]
    lib.qwen3tts_codec_stack.restype = I
