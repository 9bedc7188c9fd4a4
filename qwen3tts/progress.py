"""Progress on stderr for the command line: a one-line bar redrawn in place (only when stderr is a
terminal and `--quiet` is not given), and the closing summary line of `say`.

The bar of `say` counts generated 80 ms frames against an estimate from the text length (speech
runs at roughly 14 characters per second); it stays below 100 % until the work is really done.
"""

from __future__ import annotations

import sys
import time

CHARS_PER_SECOND = 14.0
FRAMES_PER_SECOND = 12.5


def enabled(quiet: bool, stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return not quiet and stream.isatty()
    except (AttributeError, ValueError):
        return False


def estimate_frames(text: str) -> int:
    return max(1, int(len(text.strip()) / CHARS_PER_SECOND * FRAMES_PER_SECOND))


class Bar:
    """`Bar(label, total, on)`; `update(done, note)` redraws at most ~10 times a second;
    `close()` clears the line. Does nothing when `on` is False."""

    WIDTH = 28

    def __init__(self, label: str, total: float, on: bool, stream=None):
        self.label, self.total, self.on = label, max(float(total), 1e-9), on
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: float, note: str = "", force: bool = False) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(done / self.total, 0.99 if not force else 1.0)
        fill = int(frac * self.WIDTH)
        line = f"\r{self.label} [{'#' * fill}{'.' * (self.WIDTH - fill)}] {frac * 100:3.0f}%  {now - self.t0:5.1f} s  {note}"
        self.stream.write(line[:200].ljust(80))
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.on and self._shown:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def summary(target: str, audio_seconds: float, wall: float, synth: float, warnings: list[str]) -> str:
    """`wrote out.wav: 3.20 s of audio, wall 4.10 s (synthesis 3.00 s), RTF 0.94, no warnings`;
    RTF = synthesis time / audio time (below 1: faster than real time)."""
    rtf = synth / audio_seconds if audio_seconds > 0 else float("inf")
    w = "no warnings" if not warnings else f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}: " + "; ".join(warnings)
    return f"wrote {target}: {audio_seconds:.2f} s of audio, wall {wall:.2f} s (synthesis {synth:.2f} s), RTF {rtf:.2f}, {w}"
