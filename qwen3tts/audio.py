"""Audio I/O helpers: load (WAV/FLAC/OGG/... via soundfile), mono mix, resample, PCM conversion.

Mirrors the official wrapper's input handling (`Qwen3TTSTokenizer` / `Qwen3TTSModel`): channels
are averaged, audio at another rate is resampled to 24 kHz with soxr "HQ" (what librosa's
default `soxr_hq` resampler uses), and no normalisation is applied.

Untrusted files (uploads) are read header first: `load_audio(..., max_seconds=, min_rate=)`
rejects a clip whose header says it is too long, or whose rate is out of range, before decoding
anything, and then decodes block by block (mixing to mono as it goes) up to `max_seconds`, so a
lying header or a tiny file of compressed silence cannot make the decoded size, or the memory of
the resampler after it, exceed what `max_seconds` of audio at `max_rate` takes.
"""

from __future__ import annotations

import io
import re
import wave
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 24000
MAX_RATE = 192000  # highest file rate accepted when limits apply (untrusted input)
MAX_CHANNELS = 16
_BLOCK = 65536  # frames decoded at a time when mixing a multi-channel file down


class AudioError(ValueError):
    pass


class AudioTooLong(AudioError):
    """The clip is longer than the caller's `max_seconds` (decided from the header, or while decoding)."""


def load_audio(src, sample_rate: int | None = None, target_rate: int = SAMPLE_RATE, max_seconds: float | None = None,
               min_rate: int | None = None) -> np.ndarray:
    """Return mono float32 samples at `target_rate`.

    `src`: a path, bytes / file-like object, a (samples, rate) tuple, or a 1-D/2-D array or
    tensor (then `sample_rate` is required; 2-D arrays are averaged over the channel axis, which
    is the smaller one).

    Limits for untrusted input: with `max_seconds`, a file is checked from its header first
    (duration, rate in `min_rate`..`MAX_RATE`, at most `MAX_CHANNELS`) and decoded to at most
    `max_seconds` (raises `AudioTooLong` beyond); raw samples longer than that are refused too.
    """
    if isinstance(src, tuple) and len(src) == 2:
        src, sample_rate = src
    if isinstance(src, (str, Path, bytes, bytearray)) or hasattr(src, "read"):
        data, sr = _read_file(src, max_seconds, min_rate)
    else:
        if sample_rate is None:
            raise AudioError("sample_rate is required with raw samples")
        data = src.detach().cpu().float().numpy() if isinstance(src, torch.Tensor) else np.asarray(src, dtype=np.float32)
        sr = int(sample_rate)
        if min_rate is not None and sr < min_rate:
            raise AudioError(f"sample rate {sr} Hz is below the minimum of {min_rate} Hz")
        if max_seconds is not None and sr > 0 and max(np.shape(data), default=0) > max_seconds * sr:
            raise AudioTooLong(f"the clip is longer than {max_seconds:g} s")
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


def _decode_error(e: Exception) -> str:
    """libsndfile's reason without the file's name: it says `Error opening <_io.BytesIO object at
    0x...>: ...` or `Error opening '/abs/path': ...`, neither of which belongs in a reply."""
    msg = re.sub(r"^Error (opening|reading) .*?: ", "", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    msg = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<data>", msg)
    return msg[:200]


def _read_file(src, max_seconds: float | None = None, min_rate: int | None = None):
    import soundfile as sf

    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    if isinstance(src, (str, Path)) and not Path(src).is_file():
        raise AudioError(f"audio file not found: {Path(src).name}")
    try:
        f = sf.SoundFile(src)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for undecodable data
        raise AudioError(f"could not decode audio ({_decode_error(e)})") from None
    with f:
        sr, channels, frames = f.samplerate, f.channels, f.frames
        if sr <= 0:
            raise AudioError(f"bad sample rate {sr}")
        if max_seconds is None:  # trusted input: decode it all
            try:
                return f.read(dtype="float32", always_2d=False), sr
            except Exception as e:  # noqa: BLE001
                raise AudioError(f"could not decode audio ({_decode_error(e)})") from None
        # untrusted input: judge the header before decoding anything
        if min_rate is not None and sr < min_rate:
            raise AudioError(f"sample rate {sr} Hz is below the minimum of {min_rate} Hz")
        if sr > MAX_RATE:
            raise AudioError(f"sample rate {sr} Hz is above the maximum of {MAX_RATE} Hz")
        if channels > MAX_CHANNELS:
            raise AudioError(f"{channels} channels; at most {MAX_CHANNELS} are accepted")
        limit = int(max_seconds * sr)
        if 0 < frames < 2**62 and frames > limit:
            raise AudioTooLong(f"the clip is {frames / sr:.1f} s long; at most {max_seconds:g} s are accepted")
        # then decode at most `limit` + 1 frames (a header may lie), mixing down block by block
        out = np.empty(limit + 1, np.float32)  # (frames,) mono
        n = 0
        try:
            while n <= limit:
                block = f.read(min(_BLOCK, limit + 1 - n), dtype="float32", always_2d=True)  # (k, channels)
                if not len(block):
                    break
                out[n : n + len(block)] = block.mean(axis=1) if channels > 1 else block[:, 0]
                n += len(block)
        except Exception as e:  # noqa: BLE001
            raise AudioError(f"could not decode audio ({_decode_error(e)})") from None
        if n > limit:
            raise AudioTooLong(f"the clip is longer than {max_seconds:g} s")
        return out[:n], sr


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return np.ascontiguousarray(x, dtype=np.float32)
    if sr <= 0:
        raise AudioError(f"bad sample rate {sr}")
    import soxr

    return soxr.resample(np.ascontiguousarray(x, dtype=np.float32), sr, target, quality="HQ").astype(np.float32, copy=False)


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
