#!/usr/bin/env python
"""Soak test of the speak server on loopback (not run in CI).

    python scripts/soak.py                      # tiny fixture model, 8 sessions x 50 requests
    python scripts/soak.py --model DIR --sessions 8 --requests 50 --seed 1

Starts the server in this process on 127.0.0.1 (a free port), then runs N concurrent sessions,
each sending M speak requests; at random a request is cancelled mid-stream, or the client
disconnects mid-stream and reconnects. Every request must end with `complete` or (when we
cancelled it) `error{CANCELLED}`; anything else counts as an error. Reports errors (must be 0),
RSS before/after, and that the server is idle afterwards (no sessions, no active requests).
Loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qwen3tts.server.app import ServerConfig, SpeakServer  # noqa: E402

TEXTS = ["Hello there.", "How are you doing today?", "This is a slightly longer sentence for the soak test.", "Numbers: one, two, three."]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def session_worker(url: str, n: int, rng: random.Random, stats: dict, deadline: float):
    async with aiohttp.ClientSession() as http:
        ws = None
        for i in range(n):
            if time.monotonic() > deadline:
                stats["unfinished"] += n - i
                return
            if ws is None or ws.closed:
                ws = await http.ws_connect(url)
                while True:
                    m = json.loads((await ws.receive(timeout=60)).data)
                    if m["type"] == "ready":
                        break
                    if m["type"] == "error":
                        stats["errors"].append(m)
                        return
            action = rng.choices(["complete", "cancel", "disconnect"], [0.7, 0.2, 0.1])[0]
            rid = f"s{id(ws) % 997}-{i}"
            await ws.send_json({"type": "speak", "text": rng.choice(TEXTS), "id": rid})
            frames = 0
            while True:
                msg = await ws.receive(timeout=120)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames += 1
                    if action == "cancel" and frames == 2:
                        await ws.send_json({"type": "cancel"})
                    if action == "disconnect" and frames == 2:
                        await ws.close()
                        stats["disconnects"] += 1
                        break
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    stats["errors"].append({"unexpected close": ws.close_code})
                    break
                m = json.loads(msg.data)
                if m["type"] == "complete":
                    stats["completed"] += 1
                    break
                if m["type"] == "error":
                    if m["code"] == "CANCELLED" and action == "cancel":
                        stats["cancelled"] += 1
                    else:
                        stats["errors"].append(m)
                    break
        if ws is not None and not ws.closed:
            await ws.close()


async def main_async(args):
    port = args.port or _free_port()
    cfg = ServerConfig(model=args.model, voices_dir=tempfile.mkdtemp(prefix="soak-voices-"), port=port, greedy=True,
                       max_new_tokens=args.max_new_tokens, max_sessions=args.sessions + 4)
    server = SpeakServer(cfg)
    runner = web.AppRunner(server.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"ws://127.0.0.1:{port}/api/v1/speak"
    # load the model (and warm up) before measuring RSS
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        while json.loads((await ws.receive(timeout=600)).data)["type"] != "ready":
            pass
        await ws.send_json({"type": "speak", "text": "Warm up."})
        while True:
            msg = await ws.receive(timeout=120)
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] in ("complete", "error"):
                break
        await ws.close()
    rss0 = rss_mb()
    stats = {"completed": 0, "cancelled": 0, "disconnects": 0, "unfinished": 0, "errors": []}
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    deadline = t0 + args.max_seconds
    await asyncio.gather(*[session_worker(url, args.requests, random.Random(rng.random()), stats, deadline) for _ in range(args.sessions)])
    elapsed = time.monotonic() - t0
    for _ in range(100):  # let disconnects settle
        if not server.sessions and not server.engine._active:
            break
        await asyncio.sleep(0.05)
    idle = not server.sessions and not server.engine._active
    rss1 = rss_mb()
    await runner.cleanup()
    server.engine.shutdown()
    report = {"sessions": args.sessions, "requests_per_session": args.requests, "elapsed_s": round(elapsed, 1),
              "completed": stats["completed"], "cancelled": stats["cancelled"], "disconnects": stats["disconnects"],
              "unfinished": stats["unfinished"], "errors": len(stats["errors"]), "error_samples": stats["errors"][:5],
              "server_idle_after": idle, "rss_before_mb": round(rss0, 1), "rss_after_mb": round(rss1, 1)}
    print(json.dumps(report, indent=1))
    return 0 if not stats["errors"] and idle and not stats["unfinished"] else 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "tiny" / "model"))
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
