"""Audio encoders for the OpenAI-compatible route's `response_format`: `pcm` (raw 16-bit
little-endian mono), `wav`, `mp3`, `opus` (Ogg Opus), `flac`. MP3, Opus and FLAC are written by
libsndfile (inside `soundfile`), so no ffmpeg is needed; AAC is not available without it.

An encoder takes 16-bit PCM chunks as they are generated and returns the bytes that are ready to
send. `pcm`, `wav` and `opus` stream (Opus leaves in Ogg pages of about one second, each page
carrying its exact sample position, so the decoded length is exact). `mp3` and `flac` are
buffered and sent whole: libsndfile completes their headers at the end (the MP3 Info tag with the
encoder delay and padding, FLAC's STREAMINFO sample count), and without those a decoder's length
is wrong or unknown. Numpy and soundfile only: no torch.
"""

from __future__ import annotations

import io
import struct

import numpy as np

RATE = 24000
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
_LIBSNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III", False), "opus": ("OGG", "OPUS", True), "flac": ("FLAC", "PCM_16", False)}


def _available() -> tuple[str, ...]:
    """The formats this machine's libsndfile can write (MP3 needs libsndfile >= 1.1)."""
    import soundfile

    return tuple(f for f in CONTENT_TYPES if f not in _LIBSNDFILE or _LIBSNDFILE[f][1] in soundfile.available_subtypes(_LIBSNDFILE[f][0]))


SUPPORTED = _available()


def wav_header_streaming(rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as streaming servers do)."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


class Encoder:
    """Raw PCM: every chunk goes out as it is."""

    streams = True

    def __init__(self, fmt: str = "pcm", rate: int = RATE):
        self.fmt, self.rate = fmt, rate
        self.content_type = CONTENT_TYPES[fmt]

    def write(self, pcm16: bytes) -> bytes:
        """16-bit little-endian mono samples in; bytes ready to send out (maybe empty)."""
        return pcm16

    def finish(self) -> bytes:
        """The last bytes of the stream (for a buffered format: the whole file)."""
        return b""


class WavEncoder(Encoder):
    """WAV with a streaming header (sizes 0xFFFFFFFF), then the samples as they come."""

    def __init__(self, rate: int = RATE):
        super().__init__("wav", rate)
        self._header = wav_header_streaming(rate)

    def write(self, pcm16: bytes) -> bytes:
        out, self._header = self._header + pcm16, b""
        return out

    def finish(self) -> bytes:
        out, self._header = self._header, b""
        return out


class _Sink(io.RawIOBase):
    """The seekable file libsndfile writes to. Bytes up to `sent` have left already; a later
    rewrite inside them (a header completed at close) can only reach a buffered format's output."""

    def __init__(self):
        super().__init__()
        self.buf, self.pos, self.sent = bytearray(), 0, 0

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, b) -> int:
        b = bytes(b)
        self.buf[self.pos:self.pos + len(b)] = b
        self.pos += len(b)
        return len(b)

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n is None or n < 0 else self.pos + n
        b = bytes(self.buf[self.pos:end])
        self.pos += len(b)
        return b

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else len(self.buf) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out = bytes(self.buf[self.sent:])
        self.sent = len(self.buf)
        return out


class SoundFileEncoder(Encoder):
    """MP3 / Ogg Opus / FLAC through libsndfile, fed incrementally."""

    def __init__(self, fmt: str, rate: int = RATE):
        import soundfile

        super().__init__(fmt, rate)
        major, subtype, self.streams = _LIBSNDFILE[fmt]
        self._sink = _Sink()
        self._sf = soundfile.SoundFile(self._sink, "w", samplerate=rate, channels=1, format=major, subtype=subtype)

    def write(self, pcm16: bytes) -> bytes:
        if pcm16:
            self._sf.write(np.frombuffer(pcm16, dtype="<i2"))
        return self._sink.take() if self.streams else b""

    def finish(self) -> bytes:
        self._sf.close()
        return self._sink.take() if self.streams else bytes(self._sink.buf)


def encoder(fmt: str, rate: int = RATE) -> Encoder:
    """A fresh encoder for one response; `fmt` must be in SUPPORTED."""
    if fmt == "pcm":
        return Encoder("pcm", rate)
    if fmt == "wav":
        return WavEncoder(rate)
    return SoundFileEncoder(fmt, rate)
