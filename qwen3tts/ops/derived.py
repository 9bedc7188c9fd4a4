"""What the seam's backends keep beside (or instead of) a module's weight: a form derived from
it, cached on the module while the weight is unchanged (`cached`), and the stand-in left in the
parameter's place when a backend keeps only its own form (`stand_in`). Not in the official model
(its modules hold their weights as they are)."""

from __future__ import annotations

import torch
import torch.nn as nn


def version(t: torch.Tensor) -> int:
    """`t`'s in-place update counter (inference-mode tensors have none: -1)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def cached(owner: nn.Module, slot: str, w: torch.Tensor, build, *key):
    """`build(weight)` cached on `owner` under `slot` while `w` (and `key`) is unchanged; a
    packed-only weight (native/dnn.py pack_only: `w` its stand-in) is read back from its packed
    copy once, for the build."""
    key = (version(w), w.data_ptr(), w.is_meta, *key)
    c = owner.__dict__.get(slot)
    if c is None or c[0] != key:
        if w.is_meta:
            from ..native import dnn

            w = dnn._rebuild(owner)
        owner.__dict__[slot] = c = (key, build(w.detach()))
    return c[1]


def stand_in(param_owner: nn.Module, name: str = "weight") -> torch.Tensor:
    """Replace `param_owner.<name>` by a parameter on the meta device with its shape, strides
    and dtype (no storage); returns the weight it replaced."""
    w = getattr(param_owner, name)
    param_owner._parameters[name] = nn.Parameter(torch.empty_strided(w.shape, w.stride(), dtype=w.dtype, device="meta"),
                                                 requires_grad=False)
    return w
