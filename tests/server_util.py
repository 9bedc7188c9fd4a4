"""Run a SpeakServer on loopback in a background thread, and a small client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import aiohttp
from aiohttp import web

from qwen3tts.server.app import ServerConfig, SpeakServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    def __init__(self, cfg: ServerConfig, engine=None):
        cfg.port = cfg.port if cfg.port != 8765 else free_port()
        self.cfg = cfg
        self.server = SpeakServer(cfg, engine)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        self.url = f"http://127.0.0.1:{cfg.port}"
        self.ws_url = f"ws://127.0.0.1:{cfg.port}/api/v1/speak"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.cfg.port).start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        async def _stop():
            await self.runner.cleanup()  # sessions get `stopped`; a shared engine stays up

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Client:
    """Collects everything a session receives: JSON messages and binary audio."""

    def __init__(self, ws):
        self.ws = ws
        self.messages: list[dict] = []
        self.audio = bytearray()
        self.events: list = []  # ("json", msg) | ("bin", nbytes)

    async def send(self, obj):
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def next(self, timeout=30.0):
        m = await self.ws.receive(timeout=timeout)
        if m.type == aiohttp.WSMsgType.TEXT:
            d = json.loads(m.data)
            self.messages.append(d)
            self.events.append(("json", d))
            return d
        if m.type == aiohttp.WSMsgType.BINARY:
            self.audio += m.data
            self.events.append(("bin", len(m.data)))
            return m.data
        return m  # close

    async def until(self, pred, timeout=60.0):
        """Receive until a JSON message satisfies pred; returns it."""
        while True:
            m = await self.next(timeout)
            if isinstance(m, dict) and pred(m):
                return m
            if isinstance(m, aiohttp.WSMessage) and m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return m

    async def ready(self):
        return await self.until(lambda d: d["type"] in ("ready", "error"))

    async def type(self, t, timeout=60.0):
        return await self.until(lambda d: d["type"] == t or d["type"] == "error", timeout)


async def connect(session: aiohttp.ClientSession, url: str, **kw) -> Client:
    return Client(await session.ws_connect(url, **kw))
