"""Weight-only int8 for the codec decoder in the quantized modes (`quantize="w8a8"` / `"w4a8"`):
which products get int8 weights, and the conversion. Not in the official model (it has no
quantization); quant.py does the talker's.

A streaming push decodes one frame: the decoder's transformer (8 layers), its ConvNeXt blocks,
its upsampling transposed convolutions, the k7 convolution into the decoder and the first
decoder block's transposed convolution then multiply one to four rows by ~320 MB of float32
weights, so a push is bound by reading them. In the quantized modes these products keep int8
weights (symmetric, one scale per output row: `int8.quantize_channels`, the talker's) and
float32 activations (`native.w8f.W8Linear`): a quarter of the bytes, in offline decode and
streaming alike. Activations are not rounded, so the product is continuous in its input:
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
from .codec.layers import CausalConvTranspose1d
from .native import dnn
from .native.w8f import W8Linear

MODES = ("w8a8", "w4a8")  # the model's quantize modes that give the codec decoder int8 weights


def _float_weight(lin: ops.Linear) -> torch.Tensor:
    """`lin`'s float weight, rebuilt from oneDNN's packed copy where only that is kept."""
    if lin.weight.is_meta:
        dnn.restore(lin)
    return lin.weight


def w8_convolutions(decoder: nn.Module) -> list[nn.Module]:
    """The convolutions that get int8 weights: those whose product sees at most 4 rows per frame
    (a push multiplies 1-4 rows by their whole weight): the two upsampling transposed
    convolutions (1 and 2 rows per frame, 8 MB each in float32), the k7 convolution into the
    decoder (4 rows, 44 MB) and the first decoder block's transposed convolution (4 rows, 75 MB).
    The later layers see 32+ rows per frame, where the float32 products (Winograd, oneDNN) are
    the faster ones."""
    return [stage[0] for stage in decoder.upsample] + [decoder.decoder[0], decoder.decoder[1].block[1]]


def _quantize_conv(layer: nn.Module) -> int:
    """Give `layer` (a channels-last `CausalConv1d` or `CausalConvTranspose1d`) a `W8Linear` of its
    GEMM matrix as submodule `w8` (the layer computes with it) and drop its float weight (a
    stand-in with its shape on the meta device) and packed copies."""
    if "w8" in layer._modules or not layer.cl:
        return 0
    conv = layer.conv
    if conv.weight.is_meta:  # packed only: rebuilt from oneDNN's copy
        dnn.restore(layer)
    w = conv.weight
    if isinstance(layer, CausalConvTranspose1d):  # (k * Cout, Cin); the bias is added after the overlap-add
        layer.w8 = W8Linear(layer._gemm_view(w), None)
    else:  # (Cout, k * Cin), k major: the unfolded windows' order
        layer.w8 = W8Linear(w.permute(0, 2, 1).reshape(w.shape[0], -1), conv.bias)
    conv._parameters["weight"] = nn.Parameter(torch.empty_strided(w.shape, w.stride(), dtype=w.dtype, device="meta"),
                                              requires_grad=False)
    for slot in ("_dnn", "_dnn_source", "_winograd"):
        layer.__dict__.pop(slot, None)
    return w.numel()


@torch.no_grad()
def quantize_decoder(decoder: nn.Module, mode: str | None) -> int:
    """In a quantized mode (`MODES`), replace every linear of the codec decoder (its transformer's
    projections and MLPs, the ConvNeXt blocks' pointwise layers) by a `W8Linear`, and give the
    few-row convolutions (`w8_convolutions`) one: the weight-bound products of a streaming push.
    Their float (or packed) weights are dropped. Returns the number of weights converted (0 for
    float32 modes, or where already done)."""
    if mode not in MODES:
        return 0
    n = sum(_quantize_conv(m) for m in w8_convolutions(decoder))
    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            w = getattr(child, "weight", None)
            if isinstance(child, ops.Linear) and w.device.type in ("cpu", "meta") and w.dtype == torch.float32:  # meta: packed only
                w = _float_weight(child)
                parent._modules[name] = W8Linear(w, child.bias)
                n += w.numel()
    return n
