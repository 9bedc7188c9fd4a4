"""The instruction sets of the native kernels this CPU can run (tests run every one of them), and
helpers the native tests share: a stack run without its native steps, the w4a8 reference."""

from __future__ import annotations

import contextlib

import pytest
import torch

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


@pytest.fixture(autouse=True)
def fresh_library():
    """Each test starts and ends with the library as loaded from the environment (import it into a
    test module to use it there)."""
    native.reset()
    yield
    native.reset()


def without_native(stack, fn):
    """fn() with `stack`'s native decode steps switched off (its layers run as torch ops)."""
    saved, stack.native = stack.native, None
    try:
        return fn()
    finally:
        stack.native = saved


def int8_rows(x: torch.Tensor):
    """decode.c's activations: s = max|x| per row, q = round(x * f32(127 / s)) in float32; (q, s / 127)."""
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-30)
    return torch.round(x * (127.0 / s)).clamp(-127, 127).long(), s.double() / 127


def q4_reference(q: torch.Tensor, s: torch.Tensor, xq: torch.Tensor, sx: torch.Tensor) -> torch.Tensor:
    """q4.c's definition in float64: y_mn = sum_g s_ng * sum_{k in g} xq_mk q_nk, times sx_m; q
    (N, groups, G) int, s (N, groups), xq (M, groups * G) int, sx (M, 1). The group sums exact."""
    M, ng = xq.shape[0], q.shape[1]
    d = torch.einsum("mgk,ngk->mng", xq.reshape(M, ng, -1), q)  # exact int64
    return (d.double() * s[None]).sum(-1) * sx
