"""Optional int8 quantization of the talker and code predictor (CPU speed).

Decoding one frame reads ~1.65 G weights (talker once, code predictor 15 times) at one token per
matrix, so it is bound by how fast a kernel streams weights: bytes per weight and the kernel's
own throughput set the speed. Each `nn.Linear` of the two transformer stacks and the output heads
is replaced; embeddings, norms and the text projection (prefill only) stay in the model dtype.
The int8 modes use symmetric per-output-channel int8 weights (scale = max|w| / 127):

* `int8` (`Int8Linear`): weight-only; bf16 activations, PyTorch's `aten._weight_int8pack_mm`
  (the kernel gpt-fast uses for int8 on CPU). Works on any CPU.
* `w8a8` (`W8A8Linear`): int8 activations too, quantized per row (per token: symmetric,
  scale = max|x| / 127, computed at run time), integer dot products on fbgemm's VNNI kernels
  (`quantized::linear_with_input_q_dq_qweight_dq_output_fp32`). About 3x the throughput of the
  weight-only kernel on an AVX-512 VNNI CPU, and a batch of a few rows costs about one row. A row
  is quantized by its own scale, so a session's numbers do not depend on what it is batched with.
  With float32 activations on CPU, w8a8 runs instead on the native library (qwen3tts/native,
  `NativeW8A8Linear`: the same definition in C, and whole decode steps of a stack in one call)
  whenever it builds; `linear_class` makes that choice.

* `w4a8` (quant4.py): int4 weights with a bfloat16 scale per 32 inputs and per-row int8
  activations: half of w8a8's weight bytes, on the native library's int4 kernels (native/q4.c)
  with float32 activations, on `quant4.W4A8Linear` (the same definition in torch) otherwise.

Numerics drift from fp32; the drift (greedy code agreement) is measured by `scripts/drift.py` and
reported in docs/benchmarks.md.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from . import cpuinfo
from .quant4 import W4A8Linear
from .int8 import channel_scales, quantize_channels  # noqa: F401 (shared with native/stack.py; re-exported)


# Above this many rows (prefill) a linear dequantizes its weight and runs one bf16 GEMM: on the
# 2-core AVX-512 machine `_weight_int8pack_mm` costs ~0.09 ms per row for a 6144 x 1024 weight
# (75 rows: 7.0 ms) while dequantize + GEMM is ~1 ms + the GEMM (75 rows: 4.2 ms); they cross
# near 40 rows.
DEQUANT_ROWS = 40


class Int8Linear(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        q, scale = quantize_channels(lin.weight.detach().float())
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.register_buffer("weight_int8", q.contiguous())
        self.register_buffer("scales", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)  # (M, K)
        if x2.shape[0] > DEQUANT_ROWS:  # prefill: the int8 kernel costs ~M GEMVs; a bf16 GEMM wins
            y = x2 @ self.dequantized().T
        else:  # decode (M = 1 .. a few sessions): weight-only int8 GEMV, half the bytes of bf16
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight_int8, self.scales)
        y = y.reshape(*shape[:-1], self.out_features).to(x.dtype)
        return y + self.bias if self.bias is not None else y

    def dequantized(self) -> torch.Tensor:
        """The weight as bf16 (q * scale), (out, in); built per call, never kept."""
        return self.weight_int8.to(torch.bfloat16) * self.scales[:, None]


def _vnni() -> bool:
    """Does this CPU have VNNI (u8 x s8 dot products into int32 without int16 saturation)?"""
    return bool({"avx512_vnni", "avx_vnni"} & cpuinfo.flags())


# Activation levels of `W8A8Linear`: without VNNI, fbgemm's AVX2 path sums pairs of u8 x s8
# products in int16, which saturates for u8 > 128 (the reason for torch's `reduce_range`): there
# the activations get 7 bits (+-63) instead of 8 (+-127).
ACT_LEVELS = 127 if _vnni() else 63


class W8A8Linear(nn.Module):
    """int8 weights x per-row int8 activations -> fp32 (see the module docstring).

    Row b of x is scaled by its max |x| (s_b) to [-1, 1], quantized by the kernel with the fixed
    scale 1 / ACT_LEVELS around zero point ACT_LEVELS + 1 (so q - zp is in +-ACT_LEVELS), multiplied
    in int32, dequantized with the weight scales, and multiplied back by s_b."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()
        scale = channel_scales(w)
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        try:
            with warnings.catch_warnings():  # torch flags quantized-tensor creation as deprecated
                warnings.simplefilter("ignore", UserWarning)
                qw = torch.quantize_per_channel(w.cpu(), scale.double().cpu(), zero, 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(qw, None)  # fbgemm's packed int8 weight + scales
        except (RuntimeError, AttributeError) as e:
            raise RuntimeError(f"quantize='w8a8' needs PyTorch's quantized CPU kernels (fbgemm / x86), which this build "
                               f"lacks ({e}); use quantize='int8'") from e
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, shape[-1]).float()  # (M, K)
        s = x2.abs().amax(-1, keepdim=True).clamp_(min=1e-30)  # (M, 1): per-row max |x|
        y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(x2 / s, 1.0 / ACT_LEVELS, ACT_LEVELS + 1, self.packed)
        y = y.mul_(s)  # (M, N)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight (out, in), fp32 per-channel scales (out,)) as the kernel holds them."""
        qw = self.packed.unpack()[0]
        return qw.int_repr(), qw.q_per_channel_scales().float()


LINEARS = {"int8": Int8Linear, "w8a8": W8A8Linear, "w4a8": W4A8Linear}  # w4a8: int4 weights (quant4.py)


def _swap(parent: nn.Module, name: str, cls) -> int:
    lin = getattr(parent, name)
    if isinstance(lin, nn.Linear):
        setattr(parent, name, cls(lin))
        return lin.weight.numel()
    return 0


def _check_mode(mode: str, device) -> None:
    if mode not in LINEARS:
        raise ValueError(f"quantize mode must be one of {sorted(LINEARS)}, not {mode!r}")
    if mode in ("w8a8", "w4a8") and torch.device(device).type != "cpu":
        raise ValueError(f"quantize={mode!r} runs on CPU kernels; use it with device='cpu'")


def quantize_layer(layer, cls) -> int:
    """Replace the linear layers of one decoder layer by `cls` (a quantized linear); returns the
    number of weights converted. Already quantized ones are left as they are."""
    n = 0
    a, m = layer.self_attn, layer.mlp
    for name in ("qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj"):
        if getattr(a, name, None) is not None:
            n += _swap(a, name, cls)
    for name in ("gate_up_proj", "gate_proj", "up_proj", "down_proj"):
        if getattr(m, name, None) is not None:
            n += _swap(m, name, cls)
    return n


def layer_quantizer(talker, mode: str, device="cpu"):
    """`fn(layer) -> weights converted`, quantizing one decoder layer of `talker` (the loader
    calls it as each layer arrives, so the float weights of one layer at most exist beside the
    quantized ones); `quantize_talker` afterwards does the heads and the native stacks."""
    _check_mode(mode, device)
    from . import ops

    dtype = talker.codec_head.weight.dtype
    cls = linear_class(mode, dtype, ops.make(None, device, dtype))  # the plan the talker gets when its loading ends
    return lambda layer: quantize_layer(layer, cls)


HEADS_W8A8 = True  # w4a8: the output heads keep 8-bit weights (where codes are picked)


@torch.no_grad()
def quantize_talker(talker, mode: str = "int8") -> int:
    """Quantize the talker's and code predictor's linear layers in place (`mode`: int8 | w8a8 | w4a8);
    returns the number of weights converted (layers quantized while loading are not counted
    again). The float weights of a converted linear are dropped: the model holds only what it
    computes with."""
    from . import ops

    _check_mode(mode, talker.codec_head.weight.device)
    plan = ops.plan_of(talker)  # chosen when the talker was loaded
    dtype = talker.codec_head.weight.dtype
    cls = linear_class(mode, dtype, plan)
    n = 0
    for stack in (talker.model, talker.code_predictor.model):
        for layer in stack.layers:
            n += quantize_layer(layer, cls)
    head = linear_class("w8a8", dtype, plan) if mode == "w4a8" and HEADS_W8A8 else cls
    n += _swap(talker, "codec_head", head)
    for i in range(len(talker.code_predictor.lm_head)):
        n += _swap(talker.code_predictor.lm_head, str(i), head)
    native = cls is not LINEARS[mode] and plan.chain("decoder_stack_step")[:1] == ("native",)  # the native linears, read in place
    if native and all(stack.layers[0].self_attn.qkv_proj is not None for stack in (talker.model, talker.code_predictor.model)):
        from .native.stack import NativeStack

        for stack in (talker.model, talker.code_predictor.model):
            stack.native = NativeStack(stack)
    return n


def linear_class(mode: str, dtype: torch.dtype, plan=None):
    """The linear module of `mode` for activations of `dtype`: w8a8 and w4a8 in float32 run on
    the native library (qwen3tts/native: the same numerics, and whole decode steps in one call)
    where the model's compute plan (`plan`; default: the plan of a CPU model of `dtype` loaded
    now) has it in its `w8a8_linear` chain, on torch otherwise (fbgemm for w8a8, the torch
    definition for w4a8)."""
    if mode in ("w8a8", "w4a8") and dtype == torch.float32:
        from . import ops

        plan = plan or ops.make(None, "cpu", dtype)
        if plan.chain("w8a8_linear")[:1] == ("native",):  # the compute plan's choice
            if mode == "w4a8":
                from .native.q4 import NativeW4A8Linear

                return NativeW4A8Linear
            from .native.stack import NativeW8A8Linear

            return NativeW8A8Linear
    return LINEARS[mode]
