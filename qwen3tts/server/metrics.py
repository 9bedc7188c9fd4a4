"""Prometheus text exposition for the speak server (no client library needed). Counters and
histograms live here; live gauges (sessions, requests, capacity, readiness) come from
`gauge_source` (the server's `Lifecycle.gauges`) when one is set."""

from __future__ import annotations

import threading
from collections import defaultdict

FIRST_AUDIO_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.total += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def render(self, name: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        for b, c in zip(self.buckets, self.counts):
            out.append(f'{name}_bucket{{le="{b:g}"}} {c}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.total}"]
        return out


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = 0
        self.completed = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.first_audio = Histogram(FIRST_AUDIO_BUCKETS)
        self.rtf = Histogram(RTF_BUCKETS)
        self.audio_seconds = 0.0
        self.gauge_source = None  # callable -> {name: (help, value)}

    def request(self):
        with self._lock:
            self.requests += 1

    def error(self, code: str):
        with self._lock:
            self.errors[code] += 1

    def complete(self, first_audio_s: float | None, rtf: float | None, audio_s: float):
        with self._lock:
            self.completed += 1
            self.audio_seconds += audio_s
            if first_audio_s is not None:
                self.first_audio.observe(first_audio_s)
            if rtf is not None:
                self.rtf.observe(rtf)

    def render(self, sessions: int, queue_depth: int, model_status: str) -> str:
        with self._lock:
            lines = ["# TYPE qwen3tts_requests_total counter", f"qwen3tts_requests_total {self.requests}",
                     "# TYPE qwen3tts_requests_completed_total counter", f"qwen3tts_requests_completed_total {self.completed}",
                     "# TYPE qwen3tts_errors_total counter"]
            lines += [f'qwen3tts_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
            lines += ["# TYPE qwen3tts_audio_seconds_total counter", f"qwen3tts_audio_seconds_total {self.audio_seconds:.3f}"]
            lines += self.first_audio.render("qwen3tts_first_audio_seconds")
            lines += self.rtf.render("qwen3tts_real_time_factor")
            lines += ["# TYPE qwen3tts_sessions gauge", f"qwen3tts_sessions {sessions}",
                      "# TYPE qwen3tts_queue_depth gauge", f"qwen3tts_queue_depth {queue_depth}",
                      "# TYPE qwen3tts_model_loaded gauge", f"qwen3tts_model_loaded {1 if model_status == 'loaded' else 0}"]
        for name, (help_, value) in (self.gauge_source() if self.gauge_source else {}).items():
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"
