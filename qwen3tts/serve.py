"""`python -m qwen3tts.serve`: the speak WebSocket server, the voices API and the /speak page.

Every flag can also be set through an environment variable `QWEN3TTS_<FLAG>` (upper case,
dashes as underscores), e.g. `QWEN3TTS_AUTH_TOKEN`, `QWEN3TTS_PORT`. Flags win over the
environment. This module does not import torch; the engine loads the model lazily (on the first
connection) unless `--preload` is given.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import QUANTIZE_MODES

FLAGS = [
    # name, type, default, help
    ("model", str, None, "model directory or hub id (default: Qwen/Qwen3-TTS-12Hz-0.6B-Base)"),
    ("voices-dir", str, "voices", "voices store directory"),
    ("default-voice", str, None, "voice id used when a session names none"),
    ("host", str, "127.0.0.1", "bind address"),
    ("port", int, 8765, "port"),
    ("device", str, "cpu", "cpu or cuda"),
    ("dtype", str, "float32", "float32, bfloat16 or float16 (bfloat16 was ~2x faster on an AMD EPYC, slower than float32 on an Intel Xeon without AMX: see docs/benchmarks.md)"),
    ("quantize", str, "none", "; ".join(f"{k}: {v}" for k, v in QUANTIZE_MODES.items())),
    ("auth-token", str, None, "require this token (start.authToken, or Authorization: Bearer for HTTP)"),
    ("max-sessions", int, 16, "open WebSocket sessions at most"),
    ("max-queue", int, 16, "queued requests per session at most"),
    ("max-chars", int, 5000, "characters per speak request at most"),
    ("idle-timeout", float, 300.0, "close a session idle this many seconds (0: never)"),
    ("request-timeout", float, 300.0, "end a request running longer than this many seconds"),
    ("text-timeout", float, 30.0, "end a streamed request (speak final: false) that gets no text for this many seconds (0: never)"),
    ("max-upload-mb", float, 10.0, "voice upload size limit"),
    ("max-new-tokens", int, None, "talker token budget per text piece (default: the model's generation_config)"),
    ("frames-per-chunk", int, 1, "80 ms frames per audio message"),
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m qwen3tts.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, typ, default, help_ in FLAGS:
        env = "QWEN3TTS_" + name.upper().replace("-", "_")
        raw = os.environ.get(env)
        value = typ(raw) if raw not in (None, "") else default
        ap.add_argument(f"--{name}", type=typ, default=value, help=f"{help_} [env {env}]")
    ap.add_argument("--preload", action="store_true", default=os.environ.get("QWEN3TTS_PRELOAD", "") not in ("", "0"),
                    help="load the model at start instead of on the first connection [env QWEN3TTS_PRELOAD]")
    ap.add_argument("--greedy", action="store_true", default=os.environ.get("QWEN3TTS_GREEDY", "") not in ("", "0"),
                    help="greedy decoding (deterministic; for tests and parity) [env QWEN3TTS_GREEDY]")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from aiohttp import web

    from .server.app import ServerConfig, SpeakServer

    a = parse_args(argv)
    if a.quantize not in QUANTIZE_MODES:
        print(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, not {a.quantize!r}", file=sys.stderr)
        return 2
    cfg = ServerConfig(model=a.model, voices_dir=a.voices_dir, default_voice=a.default_voice, host=a.host, port=a.port,
                       preload=a.preload, device=a.device, dtype=a.dtype, quantize=a.quantize, auth_token=a.auth_token, max_sessions=a.max_sessions,
                       max_queue=a.max_queue, max_chars=a.max_chars, idle_timeout=a.idle_timeout, request_timeout=a.request_timeout, text_timeout=a.text_timeout,
                       max_upload_mb=a.max_upload_mb, greedy=a.greedy, max_new_tokens=a.max_new_tokens, frames_per_chunk=a.frames_per_chunk)
    server = SpeakServer(cfg)
    print(f"qwen3tts speak server on http://{cfg.host}:{cfg.port}/speak (ws://{cfg.host}:{cfg.port}/api/v1/speak)", file=sys.stderr, flush=True)
    web.run_app(server.app, host=cfg.host, port=cfg.port, print=None, shutdown_timeout=5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
