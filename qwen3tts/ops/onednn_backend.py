"""The oneDNN backend (native/dnn.py): float32 CPU matrix products in the oneDNN library inside
torch's CPU wheel.

* `linear`: on the weight as it is (no packed copy: the talker's float32 weights are not
  duplicated); one to a few rows stream the weight faster than MKL's GEMM.
* `gemm`: on a copy of the weight re-laid once into oneDNN's blocked format and cached on the
  owning module (`dnn.cached`, slot "_dnn"): the codec decoder's linears and convolutions.

Available where `QWEN3TTS_ONEDNN` is on, torch has the ops, and the model is float32 on CPU.
A torch whose ops exist but fail switches them off for the process (one warning) and the next
backend of the chain serves.
"""

from __future__ import annotations

import torch

from ..native import dnn

NAME = "onednn"


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return opts.onednn and device.type == "cpu" and dtype == torch.float32 and dnn._have_ops()


def linear(plan, owner, x, w, bias):
    K = w.shape[1]
    if not (x.shape[-1] == K and K and w.is_contiguous() and x.dtype == w.dtype == torch.float32 and x.device.type == "cpu"
            and dnn._have_ops()):
        return None
    try:
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, K).contiguous(), w, bias, "none", [], "")
    except (RuntimeError, NotImplementedError) as e:
        dnn._switch_off(e)
        return None
    return y.view(*x.shape[:-1], w.shape[0])


def gemm(plan, owner, x, w, bias):
    if not dnn._have_ops():
        return None
    return dnn.linear(owner, "_dnn", x, w, bias)


OPS = {"linear": linear, "gemm": gemm}
