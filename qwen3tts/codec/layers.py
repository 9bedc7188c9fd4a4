"""Convolutional building blocks of the 12 Hz speech tokenizer, each usable offline and as an
exact streaming layer.

Mirrors `Qwen3TTSTokenizerV2CausalConvNet`, `Qwen3TTSTokenizerV2CausalTransConvNet`,
`SnakeBeta`, `Qwen3TTSTokenizerV2ConvNeXtBlock`, `Qwen3TTSTokenizerV2DecoderResidualUnit`,
`Qwen3TTSTokenizerV2DecoderBlock` (qwen_tts/core/tokenizer_12hz) and transformers' `MimiConv1d`.
Parameter names match the official state_dict (`conv.weight`, `alpha`, `gamma`, ...).

Streaming contract (codec.md §7.3): a stateful layer has a `state_key` (its qualified name,
set by the owner) and `new_state(batch, device, dtype) -> list[Tensor]`; its `forward(x, st)`
reads and updates `st.bufs[state_key]` in place. Per layer:

* causal conv (stride 1, effective kernel k): the last `k - 1` input columns (zeros at start =
  the offline zero left-padding);
* causal transposed conv (kernel k, stride s, k <= 2s): the `k - s` raw output columns that
  spill into the next chunk (overlap-add tail, bias added after).

Offline decode is the same code with a fresh (zero) state, so "one push == offline" holds by
construction and parity with the official offline decode is tested against the fixtures.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops


def _cat_rows(ts) -> torch.Tensor:
    """Concatenate batch rows keeping the memory layout (a channels-last (B, C, T) view stays one)."""
    t0 = ts[0]
    if t0.dim() == 3 and not t0.is_contiguous() and t0.transpose(1, 2).is_contiguous():
        return torch.cat([t.transpose(1, 2) for t in ts]).transpose(1, 2)
    return torch.cat(ts)


class StreamState:
    """Per-stream tensors keyed by layer name, plus the frame position (RoPE, attention window).

    Every tensor is allocated once (`new_state`) and updated in place; `reset()` zeroes them.
    """

    def __init__(self, bufs: dict[str, list[torch.Tensor]]):
        self.bufs = bufs
        self.pos: int | list[int] = 0  # frames consumed so far (per row in a stacked state)

    def reset(self) -> None:
        for ts in self.bufs.values():
            for t in ts:
                t.zero_()
        if isinstance(self.pos, torch.Tensor):
            self.pos.zero_()
        else:
            self.pos = 0

    @staticmethod
    def stack(states: list["StreamState"]) -> "StreamState":
        """One batched state from batch-1 states (rows concatenated; `pos` becomes the list of
        per-row positions). Run `step` on it, then `unstack` to write the positions back.

        The rows stay resident: each state's tensors become views of its row of the batched
        tensors, so the next `stack` of the same states in the same order is free (no copies
        per step while a set of sessions runs together), and any state still works alone."""
        ids = tuple(id(s) for s in states)
        group = states[0].__dict__.get("_group")
        if group is not None and group[1] == ids and all(s.__dict__.get("_group") is group for s in states):
            st = group[0]
        else:
            keys = states[0].bufs.keys()
            st = StreamState({k: [_cat_rows(ts) for ts in zip(*(s.bufs[k] for s in states))] for k in keys})
            group = (st, ids)
            for b, s in enumerate(states):  # rebind each state to its row (in-place updates land there)
                s.bufs = {k: [t[b : b + 1] for t in ts] for k, ts in st.bufs.items()}
                s._group = group
        st.pos = [s.pos for s in states]
        return st

    def unstack(self, states: list["StreamState"]) -> None:
        """Write the per-row positions back (the tensors are the states' own rows already)."""
        for s, p in zip(states, self.pos):
            s.pos = p

    def advance(self, n: int) -> None:
        if isinstance(self.pos, torch.Tensor):  # device position (CUDA graph): in place
            self.pos.add_(n)
        elif isinstance(self.pos, int):
            self.pos += n
        else:
            self.pos = [p + n for p in self.pos]

    def frames(self) -> int:
        return int(self.pos) if isinstance(self.pos, torch.Tensor) else self.pos

    def snapshot(self) -> tuple[dict, int]:
        return {k: [t.clone() for t in ts] for k, ts in self.bufs.items()}, self.frames()

    def restore(self, snap: tuple[dict, int]) -> None:
        bufs, pos = snap
        for k, ts in self.bufs.items():
            for t, src in zip(ts, bufs[k]):
                t.copy_(src)
        if isinstance(self.pos, torch.Tensor):
            self.pos.fill_(pos)
        else:
            self.pos = pos


class CausalConv1d(nn.Module):
    """Causal Conv1d: zero (or replicate) left padding `k_eff - stride`, and right padding just
    large enough to complete the last frame (MimiConv1d / CausalConvNet, codec.md §4.1)."""

    def __init__(self, cin, cout, kernel_size, stride=1, dilation=1, groups=1, bias=True, pad_mode="constant"):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias)
        self.k_eff = (kernel_size - 1) * dilation + 1
        self.stride = stride
        self.pad_left = self.k_eff - stride
        self.pad_mode = pad_mode
        self.state_key = None
        self.cl = False  # channels-last compute (`use_channels_last`)

    def use_channels_last(self) -> None:
        """CPU speed: keep the weight physically as (Cout, k, Cin) (same values, same shape) and
        run the convolution as a channels-last 2-D convolution over (B, C, 1, T). oneDNN's
        channels-last kernels run the codec's long, few-channel convolutions faster than its NCW
        conv1d path (docs/benchmarks.md). Inputs may be laid out
        either way; outputs (and the history state) are (B, C, T) views of (B, T, C) buffers,
        which the element-wise layers keep, so the decoder stays channels-last end to end."""
        if self.pad_mode != "constant":
            raise ValueError("channels-last convolution is for zero-padded (decoder) convolutions")
        w = self.conv.weight
        w.data = w.data.unsqueeze(2).contiguous(memory_format=torch.channels_last).squeeze(2)
        self.cl = True

    def gemm_weights(self):
        """The weight this layer passes to `ops.gemm` when every product is one GEMM over its
        input rows (channels-last 1x1, stride 1, no groups): (owner, its (Cout, Cin) view)."""
        c = self.conv
        if self.cl and c.kernel_size[0] == 1 and c.stride[0] == 1 and c.groups == 1:
            return [(c, lambda w: w.permute(0, 2, 1).reshape(w.shape[0], w.shape[1]))]  # (Cout, Cin)
        return []

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """The valid convolution of the (padded) input, through the compute seam (ops.conv1d:
        Winograd F(4, 7) for wide k7 convolutions, one GEMM over the unfolded windows for short
        inputs, else torch's convolution)."""
        c = self.conv
        return ops.conv1d(self, x, c.weight, c.bias, c.stride[0], c.dilation[0], c.groups, self.cl)

    def _history_step(self, hist: torch.Tensor, x: torch.Tensor, epilogue: tuple | None = None) -> torch.Tensor | None:
        """A streaming step computed reading the history in place (no concatenation), then the
        history update; None when no backend serves it that way (ops.conv1d_history; with a
        residual unit's `epilogue`, see there)."""
        N = x.shape[-1]
        ht = hist.transpose(1, 2)  # (B, pad_left, C): the state's memory
        if not ht.is_contiguous():
            return None
        c = self.conv
        y = ops.conv1d_history(self, x, ht, c.weight, c.bias, c.dilation[0], c.groups, epilogue)
        if y is None:
            return None
        P, xt = self.pad_left, x.transpose(1, 2)  # (B, N, C)
        ht.copy_(xt[:, N - P :] if N >= P else torch.cat([ht[:, N:], xt], dim=1))
        return y

    def forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, L) -> (B, C', ceil(L / stride))."""
        L = x.shape[-1]
        n_frames = (L - self.k_eff + self.pad_left) / self.stride + 1
        extra = (math.ceil(n_frames) - 1) * self.stride + (self.k_eff - self.pad_left) - L
        if self.cl:  # pad the time axis of the (B, L, C) layout
            x = F.pad(x.transpose(1, 2), (0, 0, self.pad_left, extra)).transpose(1, 2)
        else:
            x = F.pad(x, (self.pad_left, extra), mode=self.pad_mode)
        return self._conv(x)

    # ---- streaming (stride 1, zero padding)
    def new_state(self, batch, device, dtype):
        assert self.stride == 1 and self.pad_mode == "constant"
        if self.cl:
            return [torch.zeros(batch, self.pad_left, self.conv.in_channels, device=device, dtype=dtype).transpose(1, 2)]
        return [torch.zeros(batch, self.conv.in_channels, self.pad_left, device=device, dtype=dtype)]

    def forward(self, x: torch.Tensor, st: StreamState | None = None) -> torch.Tensor:
        if st is None:
            return self.forward_offline(x)
        if self.pad_left == 0:
            return self._conv(x)
        (hist,) = st.bufs[self.state_key]
        if self.cl:
            y = self._history_step(hist, x)
            if y is not None:
                return y
            # (B, C, pad_left + N) as a view of (B, pad_left + N, C)
            xx = torch.cat([hist.transpose(1, 2), x.transpose(1, 2)], dim=1).transpose(1, 2)
        else:
            xx = torch.cat([hist, x], dim=-1)  # (B, C, pad_left + N)
        hist.copy_(xx[..., xx.shape[-1] - self.pad_left :])
        return self._conv(xx)


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d whose last `k - s` output samples are trimmed (official fix 5f8581d);
    streaming carries them as an overlap-add tail instead."""

    def __init__(self, cin, cout, kernel_size, stride):
        super().__init__()
        if kernel_size > 2 * stride:
            raise ValueError("causal transposed conv expects kernel <= 2 * stride")
        self.conv = nn.ConvTranspose1d(cin, cout, kernel_size, stride)
        self.stride = stride
        self.tail = kernel_size - stride
        self.state_key = None
        self.cl = False  # channels-last output (`use_channels_last`)

    def use_channels_last(self) -> None:
        """Keep the weight physically as (k, Cout, Cin) (same values and shape: the GEMM's
        (k*Cout, Cin) matrix, rows contiguous, as the few-row kernel reads it) and produce the
        output as a (B, Cout, T) view of a (B, T, Cout) buffer (see `CausalConv1d`)."""
        w = self.conv.weight
        w.data = w.data.permute(2, 1, 0).contiguous().permute(2, 1, 0)
        self.cl = True

    @staticmethod
    def _gemm_view(w: torch.Tensor) -> torch.Tensor:
        """The channels-last weight (Cin, Cout, k) as the GEMM's (k * Cout, Cin) matrix: a view."""
        return w.permute(2, 1, 0).reshape(w.shape[2] * w.shape[1], -1)

    def gemm_weights(self):
        """The weight this layer passes to `ops.gemm` (channels-last): (owner, view)."""
        return [(self.conv, self._gemm_view)] if self.cl else []

    def new_state(self, batch, device, dtype):
        if self.cl:
            return [torch.zeros(batch, self.tail, self.conv.out_channels, device=device, dtype=dtype).transpose(1, 2)]
        return [torch.zeros(batch, self.conv.out_channels, self.tail, device=device, dtype=dtype)]

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        """x: (B, Cin, N) -> (B, Cout, N * stride).

        Computed as one GEMM plus an overlap-add instead of `conv_transpose1d` (whose CPU
        kernel is a slow im2col path, ~4x slower here): input column t contributes
        W[:, :, j] x_t to output sample t * s + j, j < k <= 2s, i.e. to block t (j < s) and
        the first k - s samples of block t + 1 (j >= s)."""
        if self.cl:
            return self._forward_cl(x, st)
        B, _, N = x.shape
        s, k = self.stride, self.conv.kernel_size[0]
        w = self.conv.weight.reshape(self.conv.in_channels, -1)  # (Cin, Cout, k) -> (Cin, Cout * k): a view
        xt = x.transpose(1, 2).reshape(B * N, -1)  # (B*N, Cin): one 2-D GEMM (a 3-D matmul would copy w per batch row)
        z = (xt @ w).view(B, N, -1, k)  # (B, N, Cout, k)
        z = z.permute(0, 2, 1, 3)  # (B, Cout, N, k)
        y = z[..., :s].contiguous()  # (B, Cout, N, s): block t
        if self.tail:
            spill = z[..., s:]  # (B, Cout, N, tail): spills into block t + 1
            (tail,) = st.bufs[self.state_key]
            y[..., 1:, : self.tail] += spill[..., :-1, :]
            y[..., 0, : self.tail] += tail
            tail.copy_(spill[..., -1, :])
        y = y.view(B, -1, N * s)  # (B, Cout, N * s)
        return y + self.conv.bias[:, None]

    def _forward_cl(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        """The same GEMM + overlap-add in the (time, channel) layout (or the seam's
        `conv_transpose1d` blocks where a backend serves them: Winograd F(4, 2))."""
        z = ops.conv_transpose1d(self, x, self.conv.weight, self.conv.bias, self.stride)
        if z is not None:
            return self._from_blocks(z, st)
        B, _, N = x.shape
        s, k, cout = self.stride, self.conv.kernel_size[0], self.conv.out_channels
        w = self._gemm_view(self.conv.weight)  # (k * Cout, Cin): a view
        xt = x.transpose(1, 2).reshape(B * N, -1)  # (B*N, Cin)
        z = ops.gemm(self, xt, w).view(B, N, k, cout)  # (B, N, k, Cout)
        if self.tail:
            y = ops.overlap_add(self, z, st.bufs[self.state_key][0], self.conv.bias, s)  # one pass where a backend serves it
            if y is not None:
                return y
        y = z[:, :, :s].contiguous()  # (B, N, s, Cout): block t
        if self.tail:
            spill = z[:, :, s:]  # (B, N, tail, Cout): spills into block t + 1
            (tail,) = st.bufs[self.state_key]  # (B, Cout, tail)
            y[:, 1:, : self.tail] += spill[:, :-1]
            y[:, 0, : self.tail] += tail.transpose(1, 2)
            tail.copy_(spill[:, -1].transpose(1, 2))
        y = (y.view(B, N * s, cout) + self.conv.bias).transpose(1, 2)  # (B, Cout, N * s), (time, channel) in memory
        return y

    def _from_blocks(self, z: torch.Tensor, st: StreamState) -> torch.Tensor:
        """(B, N + 1, s * Cout) output blocks (overlap-added within x, bias included; block N:
        the spill) -> (B, Cout, N * s), channels-last; the tail carried in and out as above."""
        B, T, _ = z.shape
        s, cout = self.stride, self.conv.out_channels
        z = z.view(B, T, s, cout)
        if self.tail:
            (tail,) = st.bufs[self.state_key]  # (B, Cout, tail)
            z[:, 0, : self.tail] += tail.transpose(1, 2)
            spill = z[:, T - 1, : self.tail]  # (B, tail, Cout)
            tail.copy_((spill - self.conv.bias if self.conv.bias is not None else spill).transpose(1, 2))
        return z[:, : T - 1].reshape(B, (T - 1) * s, cout).transpose(1, 2)  # (B, Cout, N * s)


class SnakeBeta(nn.Module):
    """x + 1/(exp(beta) + 1e-9) * sin(x * exp(alpha))^2, alpha/beta stored in log space."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        alpha, inv_beta = self._consts()
        return ops.snake(self, x, alpha, inv_beta)  # on CPU one fused native pass in either layout

    def _consts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(exp(alpha), 1 / (exp(beta) + 1e-9)), (C,) each, cached while the parameters are unchanged."""
        key = (ops.version(self.alpha), ops.version(self.beta), self.alpha.data_ptr(), self.beta.data_ptr(), self.alpha.dtype)
        c = self.__dict__.get("_const_cache")
        if c is None or c[0] != key:
            with torch.no_grad():
                a = torch.exp(self.alpha).contiguous()
                ib = (1.0 / (torch.exp(self.beta) + 1e-9)).contiguous()
            self.__dict__["_const_cache"] = c = (key, a, ib)
        return c[1], c[2]


class ConvNeXtBlock(nn.Module):
    """Depthwise causal conv k7 -> LayerNorm(eps 1e-6) -> Linear x4 -> GELU(erf) -> Linear -> gamma, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = ops.Linear(dim, 4 * dim)
        self.pwconv2 = ops.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:  # (B, C, T)
        h = self.dwconv(x, st).transpose(1, 2)  # (B, T, C)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class UpsampleStage(nn.Sequential):
    """`decoder.upsample.i` = [CausalTransConv(k=s=factor), ConvNeXtBlock]."""

    def __init__(self, dim: int, factor: int):
        super().__init__(CausalConvTranspose1d(dim, dim, factor, factor), ConvNeXtBlock(dim))

    def forward(self, x, st):
        return self[1](self[0](x, st), st)


class ResidualUnit(nn.Module):
    """x + conv2_k1(Snake2(conv1_k7_dil(Snake1(x))))."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv1d(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv1d(dim, dim, 1)

    def forward(self, x, st):
        h = self.act1(x)
        y = self._fused(h, x, st)
        if y is not None:
            return y
        return x + self.conv2(self.act2(self.conv1(h, st)), st)

    def _fused(self, h, x, st):
        """The unit in one native pass after act1 where a backend serves it (the fused Winograd
        kernel's epilogue: act2, conv2 and the residual on each chunk while it is in cache;
        ops.conv1d_history), else None (nothing computed, the state untouched)."""
        c1, c2 = self.conv1, self.conv2
        if (st is None or not (c1.cl and c2.cl) or c1.pad_left == 0
                or c2.conv.kernel_size[0] != 1 or c2.conv.groups != 1 or x.dtype != torch.float32):
            return None
        xt = x.transpose(1, 2)  # (B, T, C)
        if not xt.is_contiguous():
            return None
        (hist,) = st.bufs[c1.state_key]
        return c1._history_step(hist, h, (xt, *self.act2._consts(), c2, c2.conv.weight, c2.conv.bias))


class DecoderBlock(nn.Module):
    """`decoder.decoder.i` (i = 1..4): Snake -> CausalTransConv(k=2r, s=r) -> ResUnits(d = 1, 3, 9)."""

    def __init__(self, cin: int, cout: int, rate: int):
        super().__init__()
        self.block = nn.ModuleList(
            [SnakeBeta(cin), CausalConvTranspose1d(cin, cout, 2 * rate, rate)] + [ResidualUnit(cout, d) for d in (1, 3, 9)]
        )

    def forward(self, x, st):
        x = self.block[1](self.block[0](x), st)
        for i in range(2, len(self.block)):  # indices: a ModuleList slice is a new ModuleList per call
            x = self.block[i](x, st)
        return x


def assign_state_keys(root: nn.Module) -> list[nn.Module]:
    """Name every stateful layer under `root` by its qualified name; return them."""
    stateful = []
    for name, m in root.named_modules():
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d)) or hasattr(m, "new_state"):
            if isinstance(m, CausalConv1d) and m.pad_left == 0:
                continue
            if isinstance(m, CausalConvTranspose1d) and m.tail == 0:
                continue
            m.state_key = name
            stateful.append(m)
    return stateful
