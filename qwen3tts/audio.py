"""Audio I/O helpers: load (WAV/FLAC/OGG/... via soundfile), mono mix, resample, PCM conversion.

Mirrors the official wrapper's input handling (`Qwen3TTSTokenizer` / `Qwen3TTSModel`): channels
are averaged, audio at another rate is resampled to 24 kHz with soxr "HQ" (what librosa's
default `soxr_hq` resampler uses), and no normalisation is applied.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 24000


class AudioError(ValueError):
    pass


def load_audio(src, sample_rate: int | None = None, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return mono float32 samples at `target_rate`.

    `src`: a path, bytes / file-like object, a (samples, rate) tuple, or a 1-D/2-D array or
    tensor (then `sample_rate` is required; 2-D arrays are averaged over the channel axis, which
    is the smaller one).
    """
    if isinstance(src, tuple) and len(src) == 2:
        src, sample_rate = src
    if isinstance(src, (str, Path, bytes, bytearray)) or hasattr(src, "read"):
        data, sr = _read_file(src)
    else:
        if sample_rate is None:
            raise AudioError("sample_rate is required with raw samples")
        data = src.detach().cpu().float().numpy() if isinstance(src, torch.Tensor) else np.asarray(src, dtype=np.float32)
        sr = int(sample_rate)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        axis = 0 if data.shape[0] < data.shape[1] else 1
        data = data.mean(axis=axis)
    if data.ndim != 1:
        raise AudioError(f"audio must be 1-D (mono) or 2-D (channels), got shape {data.shape}")
    if data.size == 0:
        raise AudioError("audio is empty")
    if not np.isfinite(data).all():
        raise AudioError("audio contains NaN or infinite samples")
    return resample(data, sr, target_rate)


def _read_file(src):
    import soundfile as sf

    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    try:
        data, sr = sf.read(src, dtype="float32", always_2d=False)
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {src}") from None
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for undecodable data
        raise AudioError(f"could not decode audio ({e})") from None
    return data, sr


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return np.ascontiguousarray(x, dtype=np.float32)
    if sr <= 0:
        raise AudioError(f"bad sample rate {sr}")
    import soxr

    return soxr.resample(x.astype(np.float32), sr, target, quality="HQ").astype(np.float32)


def float_to_pcm16(x) -> bytes:
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    return (np.clip(a, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def write_wav(path_or_file, audio, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono WAV."""
    pcm = float_to_pcm16(audio)
    with wave.open(str(path_or_file) if isinstance(path_or_file, Path) else path_or_file, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
