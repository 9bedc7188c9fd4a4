"""Load official safetensors checkpoints into the hand-written modules.

Our module trees use the official parameter names (the state_dict names that `save_pretrained`
of the official classes writes), so loading is a strict, checked copy: a missing or unexpected
tensor, or a shape mismatch, is an error that names it. A few official tensors are unused at
inference and are allowed to be absent from our modules (`ignore` patterns).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open


class WeightsError(ValueError):
    pass


def read_safetensors(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """All tensors of `path` whose name starts with `prefix` (prefix stripped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing weights file: {path}")
    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name in f.keys():
            if name.startswith(prefix):
                out[name[len(prefix):]] = f.get_tensor(name)
    return out


def split_by_prefix(tensors: dict[str, torch.Tensor], prefixes: Iterable[str], what: str) -> list[dict[str, torch.Tensor]]:
    """One dict per prefix (prefix stripped); a tensor under none of them is an error."""
    prefixes = list(prefixes)
    other = sorted(k for k in tensors if not k.startswith(tuple(prefixes)))
    if other:
        raise WeightsError(f"{what} has unexpected tensors: {', '.join(other[:20])}")
    return [{k[len(p):]: v for k, v in tensors.items() if k.startswith(p)} for p in prefixes]


def load_into(
    module: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    ignore: Iterable[str] = (),
    what: str = "checkpoint",
    dtype: torch.dtype | None = None,
) -> None:
    """Copy `tensors` into `module`'s parameters and persistent buffers, strictly.

    `ignore`: regexes of checkpoint names that are known to be unused (not an error when
    the module lacks them). Floating tensors are cast to `dtype` (default: the parameter's).
    """
    pats = [re.compile(p) for p in ignore]
    own = dict(module.state_dict())
    missing = sorted(k for k in own if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in own and not any(p.fullmatch(k) for p in pats))
    bad_shape = sorted(
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
    if bad_shape:
        problems.append("shape mismatch: " + "; ".join(bad_shape[:20]))
    if problems:
        raise WeightsError(f"{what} does not match the model: " + " | ".join(problems))
    with torch.no_grad():
        for k, t in own.items():
            src = tensors[k]
            if t.is_floating_point():
                t.copy_(src.to(dtype or t.dtype))
            else:
                t.copy_(src)
