"""Deterministic random initialisation of official-layout tensors (for tests and benchmarks).

Weights are drawn per tensor from a generator seeded by (seed, name), loosely following the
reference fixture recipe (`shared/reference/qwen3tts_ref/init.py`): matrices N(0, 1/fan_in),
biases N(0, 0.05^2), norm weights N(1, 0.1^2), layer scales U(0.05, 0.3), Snake alpha/beta
N(0, 0.2^2), embeddings N(0, 1), codebooks with cluster_usage U(0.5, 2). Logit heads get gain 4
so greedy choices are well separated.
"""

from __future__ import annotations

import hashlib
import re

import torch


def _gen(seed: int, name: str) -> torch.Generator:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(h)


def random_tensor(name: str, shape, seed: int = 0) -> torch.Tensor:
    g = _gen(seed, name)
    shape = tuple(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("initialized",):
        return torch.ones(shape)
    if leaf == "cluster_usage":
        return torch.rand(shape, generator=g) * 1.5 + 0.5
    if leaf in ("embedding_sum", "embed_sum"):
        return torch.randn(shape, generator=g)
    if leaf in ("alpha", "beta"):
        return torch.randn(shape, generator=g) * 0.2
    if leaf == "scale":
        return torch.rand(shape, generator=g) * 0.25 + 0.05
    if leaf == "gamma":
        return torch.rand(shape, generator=g) * 0.3 + 0.1
    if leaf == "bias":
        return torch.randn(shape, generator=g) * 0.05
    if len(shape) == 1:  # norm weights
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if "embedding" in name and len(shape) == 2:
        return torch.randn(shape, generator=g)
    fan_in = shape[1] * (shape[2] if len(shape) > 2 else 1)
    if re.fullmatch(r"decoder\.(upsample\.\d+\.0|decoder\.\d+\.block\.1)\.conv\.weight", name):
        fan_in = shape[0] * 2  # transposed conv (in, out, k): each output sums ~2 input frames
    gain = 4.0 if ("codec_head" in name or "lm_head" in name) else 1.0
    if re.search(r"\.conv2\.conv\.weight$|^decoder\.decoder\.\d+\.block\.1\.conv\.weight$", name):
        gain = 0.3  # keep the random vocoder's residual stack from blowing up (real peaks are ~±27)
    return torch.randn(shape, generator=g) * (gain / fan_in**0.5)
