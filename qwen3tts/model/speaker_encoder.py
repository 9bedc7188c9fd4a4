"""Speaker encoder (x-vector): the 128-bin log-mel front end and the ECAPA-TDNN network.

Mirrors `mel_spectrogram`, `Qwen3TTSSpeakerEncoder` and its helpers (`TimeDelayNetBlock`,
`Res2NetBlock`, `SqueezeExcitationBlock`, `SqueezeExcitationRes2NetBlock`,
`AttentiveStatisticsPooling`) in qwen_tts modeling_qwen3_tts.py (talker.md §5):

* mel: reflect-pad (n_fft - hop)/2, STFT n_fft 1024 / hop 256 / periodic Hann, `center=False`,
  magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filterbank (librosa defaults, built here without
  librosa), log(clamp(x, 1e-5)) -> (1, frames, 128);
* ECAPA: every conv `padding="same"` with reflect padding; TDNN = conv + ReLU (no BatchNorm);
  Res2Net chunks; squeeze-excitation on the time mean; MFA over blocks 1..n-2; attentive
  statistics pooling; final 1x1 conv -> (enc_dim,).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- mel front end


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def slaney_mel_filterbank(sr: int = 24000, n_fft: int = 1024, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with its defaults (htk=False,
    norm='slaney', float32): (n_mels, 1 + n_fft // 2)."""
    fmax = sr / 2 if fmax is None else fmax
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return torch.from_numpy(weights)


_FB_CACHE: dict = {}


def log_mel(wav: torch.Tensor, sr: int = 24000, n_fft: int = 1024, hop: int = 256, n_mels: int = 128, fmin: float = 0.0, fmax: float = 12000.0) -> torch.Tensor:
    """wav (L,) or (B, L) float -> log-mel (B, frames, n_mels), frames = L // hop."""
    if wav.dim() == 1:
        wav = wav[None]
    key = (sr, n_fft, n_mels, fmin, fmax, wav.device)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax).to(wav.device)
    fb = _FB_CACHE[key]
    pad = (n_fft - hop) // 2
    y = F.pad(wav.float()[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=n_fft, window=torch.hann_window(n_fft, device=wav.device),
                      center=False, normalized=False, onesided=True, return_complex=True)
    mag = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)  # (B, 513, frames)
    mel = torch.matmul(fb, mag)
    return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2)  # (B, frames, n_mels)


# --------------------------------------------------------------------------- ECAPA-TDNN


def _conv(cin, cout, k, dilation=1):
    return nn.Conv1d(cin, cout, k, dilation=dilation, padding="same", padding_mode="reflect")


class TDNN(nn.Module):
    def __init__(self, cin, cout, k, dilation):
        super().__init__()
        self.conv = _conv(cin, cout, k, dilation)

    def forward(self, x):
        return F.relu(self.conv(x))


class Res2NetBlock(nn.Module):
    def __init__(self, cin, cout, scale, k, dilation):
        super().__init__()
        self.scale = scale
        self.blocks = nn.ModuleList([TDNN(cin // scale, cout // scale, k, dilation) for _ in range(scale - 1)])

    def forward(self, x):
        outs = []
        for i, part in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                y = part
            elif i == 1:
                y = self.blocks[0](part)
            else:
                y = self.blocks[i - 1](part + y)
            outs.append(y)
        return torch.cat(outs, dim=1)


class SEBlock(nn.Module):
    def __init__(self, cin, se, cout):
        super().__init__()
        self.conv1 = _conv(cin, se, 1)
        self.conv2 = _conv(se, cout, 1)

    def forward(self, x):
        s = torch.sigmoid(self.conv2(F.relu(self.conv1(x.mean(dim=2, keepdim=True)))))
        return x * s


class SERes2NetBlock(nn.Module):
    def __init__(self, cin, cout, scale, se, k, dilation):
        super().__init__()
        self.tdnn1 = TDNN(cin, cout, 1, 1)
        self.res2net_block = Res2NetBlock(cout, cout, scale, k, dilation)
        self.tdnn2 = TDNN(cout, cout, 1, 1)
        self.se_block = SEBlock(cout, se, cout)

    def forward(self, x):
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + x


class AttentiveStatsPool(nn.Module):
    def __init__(self, channels, attention):
        super().__init__()
        self.tdnn = TDNN(channels * 3, attention, 1, 1)
        self.conv = _conv(attention, channels, 1)

    @staticmethod
    def _stats(x, m):
        mean = (m * x).sum(2)
        std = torch.sqrt((m * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(1e-12))
        return mean, std

    def forward(self, x):  # (B, C, T) -> (B, 2C, 1)
        T = x.shape[-1]
        m = torch.ones(x.shape[0], 1, T, device=x.device, dtype=x.dtype)
        mean, std = self._stats(x, m / m.sum(dim=2, keepdim=True))
        attn = torch.cat([x, mean.unsqueeze(2).repeat(1, 1, T), std.unsqueeze(2).repeat(1, 1, T)], dim=1)
        attn = F.softmax(self.conv(torch.tanh(self.tdnn(attn))), dim=2)
        mean, std = self._stats(x, attn)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


class SpeakerEncoder(nn.Module):
    """log-mel (B, T, mel_dim) -> x-vector (B, enc_dim)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch, ks, dl = cfg.enc_channels, cfg.enc_kernel_sizes, cfg.enc_dilations
        self.blocks = nn.ModuleList(
            [TDNN(cfg.mel_dim, ch[0], ks[0], dl[0])]
            + [SERes2NetBlock(ch[i - 1], ch[i], cfg.enc_res2net_scale, cfg.enc_se_channels, ks[i], dl[i]) for i in range(1, len(ch) - 1)]
        )
        self.mfa = TDNN(sum(ch[1:-1]), ch[-1], ks[-1], dl[-1])
        self.asp = AttentiveStatsPool(ch[-1], cfg.enc_attention_channels)
        self.fc = _conv(ch[-1] * 2, cfg.enc_dim, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.transpose(1, 2)  # (B, mel_dim, T)
        hs = []
        for blk in self.blocks:
            x = blk(x)
            hs.append(x)
        x = self.mfa(torch.cat(hs[1:], dim=1))
        return self.fc(self.asp(x)).squeeze(-1)
