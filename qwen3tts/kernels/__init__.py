"""Kernel dispatch: Triton on CUDA tensors when usable, the torch reference otherwise.

`QWEN3TTS_KERNELS=auto|torch|triton` (default auto). `triton` on a device Triton cannot use
raises; `auto` falls back quietly. `import triton` happens lazily, never at package import.
The choice is made per call from the tensor's device (static under CUDA-graph capture).
Under `TRITON_INTERPRET=1` Triton kernels also run on CPU tensors (tests only).
"""

from __future__ import annotations

import torch

from .. import options
from . import reference

_MODE = None


def kernel_mode() -> str:
    global _MODE
    if _MODE is None:
        return options.current().kernels
    return _MODE


def set_kernel_mode(mode: str | None) -> None:
    """Override the option (None: `QWEN3TTS_KERNELS` from options again)."""
    global _MODE
    if mode is not None and mode not in ("auto", "torch", "triton"):
        raise ValueError(f"kernel mode must be auto, torch or triton, not {mode!r}")
    _MODE = mode


def _interpret() -> bool:
    return options.current().triton_interpret


def triton_usable(device: torch.device) -> bool:
    if device.type != "cuda" and not (device.type == "cpu" and _interpret()):
        return False
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def use_triton(x: torch.Tensor) -> bool:
    mode = kernel_mode()
    if mode == "torch":
        return False
    if mode == "auto":
        return x.is_cuda and triton_usable(x.device)
    if not triton_usable(x.device):
        raise RuntimeError(f"QWEN3TTS_KERNELS=triton but Triton cannot run on {x.device} (install triton; on CPU set TRITON_INTERPRET=1)")
    return True


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if use_triton(x):
        from .triton_rmsnorm import rms_norm as _tri

        return _tri(x, weight, eps)
    return reference.rms_norm(x, weight, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    if use_triton(x):
        from .triton_rope import apply_rope as _tri

        return _tri(x, cos, sin)
    return reference.apply_rope(x, cos, sin)
