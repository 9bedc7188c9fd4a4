"""The GEMM backend of `conv1d`: a channels-last convolution as one matrix product over its
unfolded input windows, through the plan's `gemm` chain (oneDNN with the weight packed once,
the native few-row kernel, torch's GEMM).

One GEMM reads the weight once, where `F.conv2d` re-lays the weight per call (which dominates
for short inputs: streaming steps). It serves convolutions without groups whose unfolded input
per batch row (out_len x k x Cin values) is at most `GEMM_CONV_MAX`, and every 1x1 convolution
where oneDNN leads the `gemm` chain; longer inputs (offline decode) go on to torch's
convolution. Per row, so a batch of streams takes the same path as each stream alone.
"""

from __future__ import annotations

import torch

NAME = "gemm"
GEMM_CONV_MAX = 1 << 20


def available(opts, device: torch.device, dtype: torch.dtype) -> bool:
    return True


def unfold(x: torch.Tensor, w: torch.Tensor, n: int, stride: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the unfolded input windows (B*n, k*Cin), k major; the weight as (Cout, k*Cin), a view of
    its channels-last memory)."""
    cout, cin, k = w.shape
    if k == 1 and stride == 1:  # the input rows themselves (a view of channels-last memory)
        cols = x.transpose(1, 2).reshape(x.shape[0] * n, cin)
    else:
        win = x.transpose(1, 2).unfold(1, (k - 1) * dilation + 1, stride)  # (B, n, Cin, k_eff): a view
        cols = win[..., ::dilation].transpose(2, 3).reshape(x.shape[0] * n, k * cin)  # (B*n, k*Cin)
    return cols, w.permute(0, 2, 1).reshape(cout, k * cin)


def conv1d(plan, owner, x, w, bias, stride, dilation, groups, cl):
    if not cl or groups != 1:
        return None
    cout, cin, k = w.shape
    B, _, L = x.shape
    n = (L - (k - 1) * dilation - 1) // stride + 1  # output length
    onednn_1x1 = k == 1 and stride == 1 and plan.leads("gemm") == "onednn" and x.dtype == torch.float32 and x.device.type == "cpu"
    if n <= 0 or not (n * k * cin <= GEMM_CONV_MAX or onednn_1x1):
        return None
    cols, w2 = unfold(x, w, n, stride, dilation)
    return plan.run("gemm", owner, cols, w2, bias).view(B, n, -1).transpose(1, 2)


OPS = {"conv1d": conv1d}
