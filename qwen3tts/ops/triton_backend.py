"""The Triton backend (qwen3tts/kernels): RMSNorm and RoPE as Triton kernels on CUDA tensors
(fewer launches inside the captured decode step). Under `TRITON_INTERPRET=1` with
`QWEN3TTS_KERNELS=triton` they also run on CPU tensors (tests only).

Available where `QWEN3TTS_KERNELS` is auto (CUDA devices) or triton, and triton imports;
`QWEN3TTS_KERNELS=triton` where it cannot run raises when the plan is made.
"""

from __future__ import annotations

import torch

NAME = "triton"


def _usable(opts, device: torch.device) -> bool:
    if not (device.type == "cuda" or (device.type == "cpu" and opts.triton_interpret and opts.kernels == "triton")):
        return False
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    if opts.kernels == "torch":
        return False
    ok = _usable(opts, device)
    if opts.kernels == "triton" and not ok:
        raise RuntimeError(f"QWEN3TTS_KERNELS=triton but Triton cannot run on {device} (install triton; on CPU set TRITON_INTERPRET=1)")
    return ok


def rms_norm(plan, x, w, eps):
    if x.device.type != plan.device.type:
        return None
    from ..kernels.triton_rmsnorm import rms_norm as tri

    return tri(x, w, eps)


def rope(plan, x, cos, sin):
    if x.device.type != plan.device.type:
        return None
    from ..kernels.triton_rope import apply_rope as tri

    return tri(x, cos, sin)


OPS = {"rms_norm": rms_norm, "rope": rope}
