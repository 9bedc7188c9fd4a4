"""Weight-only int8 for the codec decoder in the quantized modes (`quantize="w8a8"` / `"w4a8"`):
which products get int8 weights, and the conversion. Not in the official model (it has no
quantization); quant.py does the talker's.

A streaming push decodes one frame: the decoder's transformer (8 layers), its ConvNeXt blocks,
its upsampling transposed convolutions, the k7 convolution into the decoder and the first
decoder block's transposed convolution then multiply one to four rows by ~320 MB of float32
weights, so a push is bound by reading them. In the quantized modes these products keep int8
weights (symmetric, one scale per output row: `int8.quantize_channels`, the talker's) and
float32 activations: a quarter of the bytes, in offline decode and streaming alike. This module
only picks the layers; the compute plan holds and computes the int8 weights (its w8f backend,
ops/w8f_backend.py over native/w8f.py), so the layers compute through `ops` as in float32. Activations are not rounded, so the product is continuous in its input:
streaming and offline decode still agree to float32 rounding within the mode (with int8
activations a last-bit difference upstream can flip a rounded activation; int8 Winograd mixes
would not be a convolution any more: their output would depend on the tile position). The drift
against float32 is measured in docs/benchmarks.md and bounded in tests/test_codec_quant.py.
Float32 (the default) is untouched.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import ops
from .codec.layers import CausalConv1d, CausalConvTranspose1d

MODES = ("w8a8", "w4a8")  # the model's quantize modes that give the codec decoder int8 weights


def w8_convolutions(decoder: nn.Module) -> list[nn.Module]:
    """The convolutions that get int8 weights: those whose product sees at most 4 rows per frame
    (a push multiplies 1-4 rows by their whole weight): the two upsampling transposed
    convolutions (1 and 2 rows per frame, 8 MB each in float32), the k7 convolution into the
    decoder (4 rows, 44 MB) and the first decoder block's transposed convolution (4 rows, 75 MB).
    The later layers see 32+ rows per frame, where the float32 products (Winograd, oneDNN) are
    the faster ones."""
    return [stage[0] for stage in decoder.upsample] + [decoder.decoder[0], decoder.decoder[1].block[1]]


def _gemm_matrix(layer: nn.Module):
    """The view of a channels-last convolution's weight as the matrix its product multiplies by:
    (k * Cout, Cin) for a transposed convolution (its bias is added after the overlap-add),
    (Cout, k * Cin), k major (the unfolded windows' order), for a convolution."""
    if isinstance(layer, CausalConvTranspose1d):
        return layer._gemm_view
    return lambda w: w.permute(0, 2, 1).reshape(w.shape[0], -1)


@torch.no_grad()
def quantize_decoder(decoder: nn.Module, mode: str | None) -> int:
    """In a quantized mode (`MODES`), have the compute plan keep int8 weights (`ops.keep_int8`)
    for every linear of the codec decoder (its transformer's projections and MLPs, the ConvNeXt
    blocks' pointwise layers) and the few-row convolutions (`w8_convolutions`, channels-last):
    the weight-bound products of a streaming push; and the wide k7 convolutions that the unfused
    Winograd F(4, 7) computes keep their transformed weights in int16
    (`ops.keep_int16_transformed`: a push's 8-9-row channel mixes read half the bytes). Their
    float (or packed) weights are dropped.
    Returns the number of weights converted (0 for float32 modes, where the plan has no int8
    products, or where already done)."""
    if mode not in MODES:
        return 0
    n = sum(ops.keep_int8(m, m.conv, _gemm_matrix(m)) for m in w8_convolutions(decoder) if m.cl)
    n += sum(ops.keep_int16_transformed(m, m.conv) for m in decoder.modules() if isinstance(m, CausalConv1d) and m.cl)
    return n + sum(ops.keep_int8(m, m) for m in decoder.modules() if isinstance(m, ops.Linear) and m.__dict__.get("ops_packed"))
