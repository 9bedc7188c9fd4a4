"""Kernels: the torch references against the HF formulas, the Triton kernels against the
references on CPU under TRITON_INTERPRET=1 (and on a GPU when there is one), and the dispatch
rules (QWEN3TTS_KERNELS=auto|torch|triton, by tensor device)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: kernels run on CPU tensors

import math

import pytest
import torch

from qwen3tts import ops, options
from qwen3tts.kernels import reference as R

triton = pytest.importorskip("triton", reason="pip install triton==3.7.1 for the interpreter tests")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = (["cpu"] if INTERPRET else []) + (["cuda"] if torch.cuda.is_available() else [])


def test_reference_rmsnorm_is_hf():
    x = torch.randn(3, 7, 64, dtype=torch.bfloat16)
    w = torch.randn(64, dtype=torch.bfloat16)
    xf = x.float()
    want = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    assert torch.equal(R.rms_norm(x, w, 1e-6), want)
    xf, wf = x.float(), w.float()  # float32 takes the fused op: the same formula, the same bits
    assert torch.equal(R.rms_norm(xf, wf, 1e-6), wf * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)))


def test_reference_rmsnorm_per_head_weights():
    """A (R, N) weight normalises R heads together, each with its own weight row (the attention's
    merged q/k norm) — equal to normalising them one by one."""
    x = torch.randn(2, 3, 5, 16)
    w = torch.randn(5, 16)
    got = R.rms_norm(x, w, 1e-6)
    for r in range(5):
        assert torch.equal(got[..., r, :], R.rms_norm(x[..., r, :], w[r], 1e-6))


def test_reference_rope_table_and_rotation():
    pos = torch.tensor([0, 1, 5, 1000])
    cos, sin = R.rope_tables(pos, 8, 1e6, torch.float32)
    inv = [1.0 / (1e6 ** (2 * i / 8)) for i in range(4)]
    assert math.isclose(cos[3, 1].item(), math.cos(1000 * inv[1]), rel_tol=1e-5)
    assert torch.equal(cos[:, :4], cos[:, 4:])  # emb = cat(freqs, freqs)
    x = torch.randn(1, 2, 4, 8)
    y = R.apply_rope(x, cos, sin)
    x1, x2 = x[..., :4], x[..., 4:]
    want = torch.cat([x1 * cos[:, :4] - x2 * sin[:, :4], x2 * cos[:, 4:] + x1 * sin[:, 4:]], -1)
    assert torch.allclose(y, want, atol=1e-6)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [32, 48, 1024])
def test_triton_rmsnorm(device, dtype, n):
    from qwen3tts.kernels.triton_rmsnorm import rms_norm

    g = torch.Generator().manual_seed(n)
    x = (torch.randn(5, 3, n, generator=g) * 3).to(device, dtype)
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(device, dtype)
    want = R.rms_norm(x, w, 1e-6)
    got = rms_norm(x, w, 1e-6)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]  # fp32: exact up to sum order; 16-bit: 1 ulp
    assert (got.float() - want.float()).abs().max().item() <= tol * max(1.0, want.float().abs().max().item())
    res = torch.randn(5, 3, n, generator=g).to(device, dtype)
    y, h = rms_norm(x, w, 1e-6, residual=res)
    if dtype == torch.bfloat16 and device == "cpu":  # the interpreter truncates bf16 (GPU: round to nearest)
        assert ((h.float() - (x + res).float()).abs() <= (x + res).float().abs() * 2**-7 + 1e-30).all()
    else:
        assert torch.equal(h, x + res)
    assert (y.float() - R.rms_norm(x + res, w, 1e-6).float()).abs().max().item() <= tol * max(1.0, y.float().abs().max().item())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_rmsnorm_per_head_weights(device, dtype):
    """(R, N) weights on x (..., R, N), non-contiguous x (a slice of a fused projection)."""
    from qwen3tts.kernels.triton_rmsnorm import rms_norm

    g = torch.Generator().manual_seed(7)
    y = (torch.randn(2, 3, 6 * 32 + 40, generator=g) * 3).to(device, dtype)
    x = y[..., : 6 * 32].view(2, 3, 6, 32)
    w = (1 + 0.1 * torch.randn(6, 32, generator=g)).to(device, dtype)
    want = R.rms_norm(x, w, 1e-6)
    got = rms_norm(x, w, 1e-6)
    tol = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}[dtype]
    assert got.shape == want.shape and (got.float() - want.float()).abs().max().item() <= tol * max(1.0, want.float().abs().max().item())
    with pytest.raises(ValueError, match="does not fit"):
        rms_norm(x, w[:5], 1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 4, 1, 32), (2, 16, 7, 128), (1, 2, 5, 64)])
def test_triton_rope(device, dtype, shape):
    from qwen3tts.kernels.triton_rope import apply_rope

    B, H, T, D = shape
    g = torch.Generator().manual_seed(D + T)
    x = torch.randn(shape, generator=g).to(device, dtype)
    pos = torch.arange(100, 100 + T, device=device)
    cos, sin = R.rope_tables(pos, D, 1e6, dtype)
    want = R.apply_rope(x, cos, sin)
    got = apply_rope(x, cos, sin)
    ulp = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    assert (got.float() - want.float()).abs().max().item() <= ulp * 4
    if dtype == torch.float32:
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    y = x.clone()
    apply_rope(y, cos, sin, inplace=True)
    assert torch.equal(y, got)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_rope_per_batch_positions(device, dtype):
    """Batched decode: every batch row (session) at its own position, cos/sin (B, 1, T, D)."""
    from qwen3tts.kernels.triton_rope import apply_rope

    B, H, T, D = 3, 4, 1, 64
    x = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(5)).to(device, dtype)
    pos = torch.tensor([7, 300, 41], device=device)
    cos, sin = R.rope_tables(pos, D, 1e6, dtype)  # (B, D)
    cos, sin = cos[:, None, None], sin[:, None, None]  # (B, 1, 1, D)
    want = R.apply_rope(x, cos, sin)
    for b in range(B):  # the reference itself: row b rotated by its own position
        c, s = R.rope_tables(pos[b : b + 1], D, 1e6, dtype)
        assert torch.equal(want[b : b + 1], R.apply_rope(x[b : b + 1], c, s))
    got = apply_rope(x, cos, sin)
    tol = {torch.float32: 1e-6, torch.bfloat16: 4 * 8e-3}[dtype]  # bf16: the interpreter truncates
    assert (got.float() - want.float()).abs().max().item() <= tol
    assert not torch.equal(want[0], want[1])  # positions really differ


def test_dispatch_rules(monkeypatch):
    """`QWEN3TTS_KERNELS` picks the plan's RMSNorm / RoPE backend once, at load: torch never uses
    Triton; auto uses it on CUDA devices only; triton where it cannot run raises."""
    x = torch.randn(2, 8)
    w = torch.ones(8)
    o = options.current()
    assert ops.make(o.replace(kernels="torch"), "cuda" if torch.cuda.is_available() else "cpu").chain("rms_norm") == ("torch",)
    assert ops.make(o.replace(kernels="auto"), "cpu").chain("rms_norm") == ("torch",)  # CPU: torch in auto mode
    if torch.cuda.is_available():
        assert ops.make(o.replace(kernels="auto"), "cuda").chain("rope") == ("triton", "torch")
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        ops.make(o.replace(kernels="triton", triton_interpret=False), "cpu")
    if INTERPRET:
        p = ops.make(o.replace(kernels="triton", triton_interpret=True), "cpu")
        assert p.chain("rms_norm") == p.chain("rope") == ("triton", "torch")
        assert torch.allclose(p.run("rms_norm", x, w, 1e-6), R.rms_norm(x, w, 1e-6), atol=1e-6)
    with pytest.raises(ValueError, match="kernels must be one of auto, torch, triton"):
        o.replace(kernels="fast")
