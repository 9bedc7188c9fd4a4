"""Admission: the server's synthesis slots, shared by every route.

`--max-sessions` bounds open *authenticated* WebSocket sessions plus in-flight HTTP synthesis
requests (`POST /v1/audio/speech`) together: each holds one slot while it lives. A WebSocket
session that finds no slot gets `error{RATE_LIMITED}` and close 1013; an HTTP request gets 429
with `Retry-After`. Everything runs on the server's event loop; the lock only keeps the counter
right should another thread ever take a slot.
"""

from __future__ import annotations

import threading

RETRY_AFTER_S = 1  # what a refused HTTP request is told to wait (slots free as requests end)
HTTP_SYNTHESIS = {("POST", "/v1/audio/speech")}  # HTTP routes that hold a slot while they run (and that a drain refuses)


class Admission:
    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if self.in_use >= self.capacity:
                return False
            self.in_use += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self.in_use <= 0:
                raise RuntimeError("Admission.release without a matching try_acquire")
            self.in_use -= 1
