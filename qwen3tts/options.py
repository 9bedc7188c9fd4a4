"""Runtime options: every environment variable the package reads, parsed once, in one place.

Not in the official model. `RuntimeOptions` is a frozen snapshot of the process environment:
the compute switches (`QWEN3TTS_NATIVE`, `_ISA`, `_ONEDNN`, `_WINOGRAD`, `_KERNELS`,
`_CUDA_GRAPHS`), where things live (`QWEN3TTS_CACHE`, `QWEN3TTS_VOICES_DIR`, `XDG_DATA_HOME`,
`CC`), the Wyoming server's own variables (`QWEN3TTS_WYOMING_URI`, `QWEN3TTS_GREEDY`),
`TRITON_INTERPRET`, and the raw `QWEN3TTS_<NAME>` strings of the settings table
(settings.py parses those by its own rows: `var(name)`).

`current()` parses `os.environ` on first use and keeps the result; nothing else in the package
reads the environment (tests/test_options.py scans the sources). A bad value is one ValueError
naming the variable. Tests and benchmarks replace the options with `override(**fields)` (a
context manager) or `set_current(options)`; `reload()` re-reads the environment. Backends are
chosen from these options when a model is loaded (qwen3tts/ops), so a change after loading
applies to models loaded afterwards.

The one write: `hub_defaults` sets the Hugging Face hub's download timeouts (setdefault, so
the user's own values win) before a download.

This module imports nothing from the package and not torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterator, Mapping

PREFIX = "QWEN3TTS_"
NATIVE_MODES = ("auto", "on", "off")
ISAS = ("portable", "avx2", "avx512", "neon")  # native/common.h Q_PORTABLE .. Q_NEON
KERNEL_MODES = ("auto", "torch", "triton")
DEFAULT_WYOMING_URI = "tcp://127.0.0.1:10200"
_ON, _OFF = ("1", "on", "true"), ("0", "off", "false")
_OTHER = ("TRITON_INTERPRET", "CC", "XDG_DATA_HOME")  # variables read that are not ours


@dataclass(frozen=True)
class RuntimeOptions:
    """The parsed environment (defaults: a process with none of the variables set)."""

    native: str = "auto"  # QWEN3TTS_NATIVE: auto (use the native library when it builds) | on (must) | off (never)
    isa: str = "auto"  # QWEN3TTS_ISA: auto (the best the CPU has) | portable | avx2 | avx512 | neon
    cache: str | None = None  # QWEN3TTS_CACHE: build cache root (default ~/.cache/qwen3tts)
    onednn: bool = True  # QWEN3TTS_ONEDNN: float32 CPU products in oneDNN (0: torch's kernels)
    winograd: bool = True  # QWEN3TTS_WINOGRAD: Winograd F(4, 7) for the codec's wide k7 convolutions
    keep_encoder: bool = False  # QWEN3TTS_KEEP_ENCODER: keep the codec encoder loaded after an encode (default: load it per encode from the file)
    kernels: str = "auto"  # QWEN3TTS_KERNELS: RMSNorm / RoPE: auto (Triton on CUDA) | torch | triton
    cuda_graphs: str | None = None  # QWEN3TTS_CUDA_GRAPHS, as written (config.cuda_graphs_option parses it)
    wyoming_uri: str = DEFAULT_WYOMING_URI  # QWEN3TTS_WYOMING_URI
    greedy: bool = False  # QWEN3TTS_GREEDY set and not 0 (the Wyoming server's default; the speak server parses its settings row)
    voices_dir: str | None = None  # QWEN3TTS_VOICES_DIR
    xdg_data_home: str | None = None  # XDG_DATA_HOME
    cc: str | None = None  # CC: the C compiler for the native library
    triton_interpret: bool = False  # TRITON_INTERPRET=1: Triton kernels on CPU tensors (tests)
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    def var(self, name: str) -> str | None:
        """The raw value of `name` (a QWEN3TTS_* variable, or one of TRITON_INTERPRET, CC,
        XDG_DATA_HOME) as it was when these options were parsed; None when unset."""
        return self.env.get(name)

    def replace(self, **changes) -> "RuntimeOptions":
        """A copy with `changes` (field names), validated like parsed values."""
        return _checked(dataclasses.replace(self, **changes))


def _choice(name: str, raw: str | None, choices: tuple[str, ...], default: str) -> str:
    v = (raw or "").strip().lower() or default
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {v!r}")
    return v


def _switch(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    v = raw.strip().lower()
    if v not in _ON + _OFF:
        raise ValueError(f"{name} must be 0 or 1, not {v!r}")
    return v in _ON


def _path(raw: str | None) -> str | None:
    v = (raw or "").strip()
    return v or None


def from_env(environ: Mapping[str, str] | None = None) -> RuntimeOptions:
    """Parse `environ` (default: the process environment). Raises ValueError naming the first
    variable with a bad value."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(PREFIX) or k in _OTHER}
    g = env.get
    return RuntimeOptions(
        native=_choice(PREFIX + "NATIVE", g(PREFIX + "NATIVE"), NATIVE_MODES, "auto"),
        isa=_choice(PREFIX + "ISA", g(PREFIX + "ISA"), ("auto", *ISAS), "auto"),
        cache=_path(g(PREFIX + "CACHE")),
        onednn=_switch(PREFIX + "ONEDNN", g(PREFIX + "ONEDNN"), True),
        winograd=_switch(PREFIX + "WINOGRAD", g(PREFIX + "WINOGRAD"), True),
        keep_encoder=_switch(PREFIX + "KEEP_ENCODER", g(PREFIX + "KEEP_ENCODER"), False),
        kernels=_choice(PREFIX + "KERNELS", g(PREFIX + "KERNELS"), KERNEL_MODES, "auto"),
        cuda_graphs=g(PREFIX + "CUDA_GRAPHS"),
        wyoming_uri=(g(PREFIX + "WYOMING_URI") or "").strip() or DEFAULT_WYOMING_URI,
        greedy=(g(PREFIX + "GREEDY") or "") not in ("", "0"),
        voices_dir=_path(g(PREFIX + "VOICES_DIR")),
        xdg_data_home=_path(g("XDG_DATA_HOME")),
        cc=_path(g("CC")),
        triton_interpret=(g("TRITON_INTERPRET") or "0").strip() == "1",
        env=MappingProxyType(env),
    )


def _checked(o: RuntimeOptions) -> RuntimeOptions:
    _choice("native", o.native, NATIVE_MODES, "auto")
    _choice("isa", o.isa, ("auto", *ISAS), "auto")
    _choice("kernels", o.kernels, KERNEL_MODES, "auto")
    return o


_lock = threading.Lock()
_current: RuntimeOptions | None = None


def current() -> RuntimeOptions:
    """The process's options (the environment parsed on first use, or what `set_current` set)."""
    global _current
    o = _current
    if o is None:
        with _lock:
            if _current is None:
                _current = from_env()
            o = _current
    return o


def set_current(options: RuntimeOptions | None) -> RuntimeOptions | None:
    """Replace the process's options (None: parse the environment again on next use); returns
    the previous ones."""
    global _current
    with _lock:
        prev, _current = _current, options
    return prev


def reload() -> RuntimeOptions:
    """Re-read the environment now (after it changed, e.g. in a test)."""
    set_current(from_env())
    return current()


@contextlib.contextmanager
def override(**changes) -> Iterator[RuntimeOptions]:
    """`with override(native="off", winograd=False): ...`: the current options with `changes`
    for the block, restored after."""
    prev = set_current(current().replace(**changes))
    try:
        yield current()
    finally:
        set_current(prev)


def hub_defaults(timeout: float, progress: bool) -> None:
    """Set the Hugging Face hub's timeouts (and no progress bars when not `progress`) for a
    download, leaving values the user set."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "60")
    if not progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
