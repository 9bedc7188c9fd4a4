"""`python -m qwen3tts.serve` as a real process: flags from the environment, lazy load on the
first connection, and a clean shutdown on SIGTERM (sessions get `stopped`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import aiohttp

from conftest import TINY_MODEL
from server_util import free_port


def test_sigterm_stops_sessions_cleanly(tmp_path):
    port = free_port()
    env = dict(os.environ, QWEN3TTS_PORT=str(port), QWEN3TTS_MODEL=str(TINY_MODEL), QWEN3TTS_GREEDY="1", QWEN3TTS_MAX_NEW_TOKENS="200",
               QWEN3TTS_DRAIN_SECONDS="0",  # no grace: the request in progress is cut (the drain is tested in test_replicas.py)
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "qwen3tts.serve", "--voices-dir", str(tmp_path / "v")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read())
                break
            except OSError:
                time.sleep(0.1)
        assert health == {"status": "ok", "model": "not_loaded"}  # lazy: nothing loaded before a session

        async def go():
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(f"ws://127.0.0.1:{port}/api/v1/speak")
                seen = []
                while True:
                    m = json.loads((await ws.receive(timeout=60)).data)
                    seen.append(m["type"])
                    if m["type"] == "ready":
                        break
                await ws.send_json({"type": "speak", "text": "A long request that will be interrupted by the shutdown."})
                while True:
                    msg = await ws.receive(timeout=60)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        p.send_signal(signal.SIGTERM)
                        break
                last = None
                while True:
                    msg = await ws.receive(timeout=30)
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        last = json.loads(msg.data)
                    elif msg.type != aiohttp.WSMsgType.BINARY:
                        break
                return seen, last, ws.close_code
        seen, last, code = asyncio.run(go())
        assert seen[0] == "loading" and seen[-1] == "ready"
        assert last == {"type": "stopped", "reason": "server_shutdown"} and code == 1001
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
