"""The settings table shared by `python -m qwen3tts` (cli.py) and `python -m qwen3tts.serve`
(serve.py): name, type, default, help, and the environment variable that sets it.

Every setting `name` is the command-line flag `--name` and the environment variable
`QWEN3TTS_<NAME>` (upper case, dashes as underscores); a flag wins over the environment, the
environment over the default. `MODEL_SETTINGS` are the ones both programs read (which model,
where, how, and where the voices live), so `qwen3tts voices add` and the server agree on one
voices directory: `default_voices_dir()`. This module does not import torch.

A `Setting` unpacks as the 4-tuple `(name, type, default, help)`, the row format of
`serve.FLAGS`, so code that iterates that table keeps working; `add_arguments` turns any such
rows into argparse options with their environment variables.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import options

ENV_PREFIX = "QWEN3TTS_"

# How the talker + code predictor may be converted (`Qwen3TTS.from_pretrained(quantize=...)`).
QUANTIZE_MODES = {
    "none": "keep the model dtype (float32: the parity mode)",
    "int8": "weight-only int8 talker + code predictor (any CPU; drifts from float32)",
    "w8a8": "int8 weights and per-token int8 activations (with float32, decode steps run in the native C library, built on first use; drifts more)",
    "w4a8": "int4 weights (a scale per 32 inputs) and per-token int8 activations (fastest on CPU: half of w8a8's weight bytes, native C library with float32; drifts most)",
}
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str, device: str) -> str:
    """The `--dtype` setting made concrete: "auto" is bfloat16 on CUDA, float32 (the parity mode) elsewhere."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def env_name(name: str) -> str:
    """`voices-dir` -> `QWEN3TTS_VOICES_DIR`."""
    return ENV_PREFIX + name.upper().replace("-", "_")


def default_voices_dir() -> Path:
    """The voices store of both the CLI and the server: `$QWEN3TTS_VOICES_DIR`, else
    `$XDG_DATA_HOME/qwen3tts/voices`, else `~/.local/share/qwen3tts/voices` (read when called,
    not at import)."""
    o = options.current()
    if o.voices_dir:
        return Path(o.voices_dir).expanduser()
    data = o.xdg_data_home or ""
    base = Path(data).expanduser() if data and Path(data).is_absolute() else Path.home() / ".local" / "share"
    return base / "qwen3tts" / "voices"


@dataclass(frozen=True)
class Setting:
    """One row of the table. `default` may be a callable (evaluated when read, e.g. a path
    that depends on $HOME); `type` bool makes an on/off switch (`--name`; environment 1/0)."""

    name: str
    type: Callable = str
    default_value: Any = None
    help: str = ""
    choices: tuple | None = None

    @property
    def env(self) -> str:
        return env_name(self.name)

    @property
    def default(self) -> Any:
        return self.default_value() if callable(self.default_value) else self.default_value

    def row(self) -> tuple:
        """(name, type, default, help): the serve.FLAGS row format."""
        return self.name, self.type, self.default, self.help

    def __iter__(self):
        return iter(self.row())

    def __getitem__(self, i):
        return self.row()[i]

    def __len__(self) -> int:
        return 4


def as_setting(row) -> Setting:
    """A `Setting` from a `Setting` or a `(name, type, default, help)` tuple."""
    if isinstance(row, Setting):
        return row
    name, typ, default, help_ = row
    return Setting(name, typ, default, help_)


MODEL_SETTINGS = [
    Setting("model", str, None, "model directory or hub id (default: Qwen/Qwen3-TTS-12Hz-0.6B-Base)"),
    Setting("voices-dir", str, lambda: str(default_voices_dir()),
            "voices store directory (default: $XDG_DATA_HOME/qwen3tts/voices, else ~/.local/share/qwen3tts/voices)"),
    Setting("device", str, "cpu", "cpu or cuda"),
    Setting("dtype", str, "auto", "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16 (bfloat16 was ~2x faster on an AMD EPYC, slower than "
            "float32 on an Intel Xeon without AMX: see docs/benchmarks.md)", choices=DTYPES),
    Setting("quantize", str, "none", "; ".join(f"{k}: {v}" for k, v in QUANTIZE_MODES.items()), choices=tuple(QUANTIZE_MODES)),
]


def setting(name: str) -> Setting:
    """The shared setting called `name`."""
    for s in MODEL_SETTINGS:
        if s.name == name:
            return s
    raise KeyError(name)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_value(s: Setting, env=None) -> Any:
    """The setting's value from the environment, or its default; a value of the wrong type or
    outside the choices is a ValueError naming the variable."""
    raw = (options.current() if env is None else options.from_env(env)).var(s.env)
    if s.type is bool:
        if raw is None:
            return bool(s.default)
        if raw.strip().lower() not in _TRUE + _FALSE:
            raise ValueError(f"{s.env} must be 1 or 0, not {raw!r}")
        return raw.strip().lower() in _TRUE
    if raw in (None, ""):
        return s.default
    try:
        value = s.type(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{s.env} must be a{'n' if s.type is int else ''} {getattr(s.type, '__name__', 'value')}, not {raw!r}") from None
    if s.choices and value not in s.choices:
        raise ValueError(f"{s.env} must be one of {', '.join(map(str, s.choices))}, not {raw!r}")
    return value


def add_arguments(ap: argparse.ArgumentParser, rows: Iterable, skip: Iterable[str] = ()) -> None:
    """Add one option per row (a `Setting` or a `(name, type, default, help)` tuple), its default
    taken from the environment (`QWEN3TTS_<NAME>`). A bad environment value ends the program
    with a usage error naming the variable."""
    skip = set(skip)
    for row in rows:
        s = as_setting(row)
        if s.name in skip:
            continue
        try:
            value = env_value(s)
        except ValueError as e:
            ap.error(str(e))
        if s.type is bool:
            ap.add_argument(f"--{s.name}", action="store_true", default=value, help=f"{s.help} [env {s.env}]")
        else:
            ap.add_argument(f"--{s.name}", type=s.type, default=value, choices=s.choices, help=f"{s.help} [env {s.env}]")
