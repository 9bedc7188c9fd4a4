"""Streamed requests in a speak session (docs/protocol.md, "Streamed text"): `speak` with
`final: false` opens one, `text` messages append to it, `final: true` ends it. The text goes
into a `qwen3tts.textstream.TextStream` (pure Python) that the engine's worker reads while it
speaks (`qwen3tts.textfeed.TextUtterance`); this mixin holds the session side: the open request,
the whole-request `--max-chars` limit, the `--text-timeout` watchdog and aborting a request
with a code. Mixed into `session.Session`.
"""

from __future__ import annotations

import asyncio
import time

from ..textstream import TextStream


class StreamedText:
    open_stream: dict | None = None  # the queue item of the streamed request still taking text

    def _stream_refused(self, m: dict) -> bool:
        return m.get("final") is False and self.open_stream is not None

    def _open_stream(self, item: dict) -> None:
        """`item` (a queued speak with final: false) gets its TextStream and its first text."""
        ts = TextStream(max_chars=self.cfg.max_chars)
        item["stream"] = ts
        ts.push(item["text"])
        self.open_stream = item

    async def _on_text(self, m: dict) -> None:
        item = self.open_stream
        if item is None:
            return await self.error("INVALID_TEXT", "no streamed request is open (speak with final: false opens one)", m["id"],
                                    recoverable=True)
        ts: TextStream = item["stream"]
        try:
            ts.push(m["text"])
        except ValueError as e:  # over --max-chars for the whole request
            return await self._abort_stream(item, "INVALID_TEXT", str(e))
        if m["final"]:
            self.open_stream = None
            if not ts.text.strip():
                return await self._abort_stream(item, "INVALID_TEXT", "text is empty")
            ts.end()

    async def _abort_stream(self, item: dict, code: str, message: str) -> None:
        """End a streamed request with `error{code}`: at once if queued, else when the engine has
        let go of it (no audio goes out after this)."""
        if self.open_stream is item:
            self.open_stream = None
        item["stream"].cancel()
        if item in self.queue:
            self.queue.remove(item)
            return await self.error(code, message, item["id"])
        item["cancelled"], item["abort"] = True, (code, message)
        if item.get("req") is not None:
            item["req"].cancelled.set()

    async def _next_event(self, inbox: asyncio.Queue, item: dict):
        """The engine's next event for `item`; a streamed request that gets no text for
        `--text-timeout` seconds is aborted with TIMEOUT meanwhile."""
        ts: TextStream | None = item.get("stream")
        limit = getattr(self.cfg, "text_timeout", 0)
        if ts is None or not limit:
            return await inbox.get()
        t0 = time.monotonic()  # time in the queue does not count
        while True:
            try:
                return await asyncio.wait_for(inbox.get(), 0.25)
            except asyncio.TimeoutError:
                if not ts.ended and time.monotonic() - max(t0, ts.last_push) > limit and not item.get("abort"):
                    await self._abort_stream(item, "TIMEOUT", f"no text for {limit:g} s (--text-timeout)")
