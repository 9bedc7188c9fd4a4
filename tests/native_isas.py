"""The instruction sets of the native kernels this CPU can run (tests run every one of them)."""

from __future__ import annotations

import contextlib

from qwen3tts import native


def isas() -> list[str]:
    """Best first (on an AVX-512 VNNI x86-64: avx512, avx2, portable); [] without the library."""
    try:
        return native.supported_isas()
    except RuntimeError:
        return []


@contextlib.contextmanager
def using(name: str):
    """The native kernels run `name` inside the block, the previous set after it."""
    before = native.set_isa(name)
    try:
        yield native.load()
    finally:
        native.set_isa(before)
