"""What the operating system says about this CPU (Linux `/proc/cpuinfo`; nothing elsewhere), read
once: the facts a kernel choice needs beyond the instruction sets the native library detects
itself (quant.py: VNNI for torch's int8 path; codec/winograd.py: AMD Zen 4's half-width AVX-512).
Not in the official model."""

from __future__ import annotations

import functools


@functools.cache
def fields() -> dict[str, str]:
    """The first processor's `key: value` lines (empty when unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if not line.strip():  # the end of the first processor's block
            break
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def flags() -> frozenset[str]:
    """The first processor's feature flags (`avx2`, `avx512_vnni`, ...)."""
    return frozenset(fields().get("flags", "").split())
