"""`python -m qwen3tts.serve`: the speak WebSocket server, the voices API and the /speak page.

Every flag can also be set through an environment variable `QWEN3TTS_<FLAG>` (upper case,
dashes as underscores), e.g. `QWEN3TTS_AUTH_TOKEN`, `QWEN3TTS_PORT`. Flags win over the
environment. The model and voices settings are the CLI's (qwen3tts/settings.py), so the server
reads the voices directory `qwen3tts voices add` writes to. This module does not import torch;
the engine loads the model lazily (on the first connection) unless `--preload` is given.
"""

from __future__ import annotations

import argparse
import sys

from .config import cuda_graphs_option
from .settings import MODEL_SETTINGS, QUANTIZE_MODES, Setting, add_arguments

FLAGS = [
    # name, type, default, help (a Setting unpacks as that 4-tuple); the shared rows first
    *MODEL_SETTINGS,  # model, voices-dir, device, dtype, quantize: the same for the CLI
    ("default-voice", str, None, "voice id used when a session names none (default: the built-in voice arctic-slt; 'none': no reference)"),
    ("cuda-graphs", str, "auto", "auto (on with --device cuda), on or off: run the batched frame step in fixed shapes, captured as CUDA graphs per batch-size bucket"),
    ("host", str, "127.0.0.1", "bind address"),
    ("port", int, 8765, "port"),
    ("auth-token", str, None, "require this token (start.authToken, or Authorization: Bearer for HTTP)"),
    ("auth-timeout", float, 5.0, "seconds a WebSocket has after `ready` to send a valid token (with --auth-token; 0: no limit)"),
    ("allowed-origins", str, None, "comma list of other origins browsers may use the server from (e.g. https://app.example.com); * for any"),
    ("allowed-hosts", str, None, "comma list of Host names accepted besides loopback ones when bound to a loopback address "
                                 "(e.g. behind a reverse proxy); * for any"),
    ("max-sessions", int, 16, "authenticated WebSocket sessions plus in-flight HTTP synthesis requests at most (HTTP beyond it: 429)"),
    ("max-queue", int, 16, "queued requests per session at most"),
    ("max-chars", int, 5000, "characters per speak request at most"),
    ("idle-timeout", float, 300.0, "close a session idle this many seconds (0: never)"),
    ("request-timeout", float, 300.0, "end a request running longer than this many seconds"),
    ("text-timeout", float, 30.0, "end a streamed request (speak final: false) that gets no text for this many seconds (0: never)"),
    ("max-upload-mb", float, 10.0, "voice upload size limit"),
    ("max-new-tokens", int, None, "talker token budget per text piece (default: the model's generation_config)"),
    ("frames-per-chunk", int, 1, "80 ms frames per audio message"),
    ("drain-seconds", float, 30.0, "on SIGTERM: /readyz turns 503, new sessions are refused, requests in progress get this long to finish"),
]

# On/off switches (`--name`, or QWEN3TTS_<NAME>=1).
SWITCHES = [
    Setting("preload", bool, False, "load the model at start instead of on the first connection"),
    Setting("greedy", bool, False, "greedy decoding (deterministic; for tests and parity)"),
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m qwen3tts.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, FLAGS)
    add_arguments(ap, SWITCHES)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from aiohttp import web

    from .server.app import ServerConfig, SpeakServer

    try:
        a = parse_args(argv)
    except SystemExit as e:  # a usage error (argparse printed it) or --help: the exit status
        return e.code if isinstance(e.code, int) else 2
    try:
        a.cuda_graphs = cuda_graphs_option(a.cuda_graphs)
    except ValueError as e:
        print(f"--cuda-graphs: {e}", file=sys.stderr)
        return 2
    if a.quantize not in QUANTIZE_MODES:
        print(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, not {a.quantize!r}", file=sys.stderr)
        return 2
    cfg = ServerConfig(model=a.model, voices_dir=a.voices_dir, default_voice=a.default_voice, host=a.host, port=a.port,
                       preload=a.preload, device=a.device, dtype=a.dtype, quantize=a.quantize, auth_token=a.auth_token, max_sessions=a.max_sessions,
                       max_queue=a.max_queue, max_chars=a.max_chars, idle_timeout=a.idle_timeout, request_timeout=a.request_timeout, text_timeout=a.text_timeout,
                       max_upload_mb=a.max_upload_mb, greedy=a.greedy, max_new_tokens=a.max_new_tokens, frames_per_chunk=a.frames_per_chunk,
                       drain_seconds=a.drain_seconds, auth_timeout=a.auth_timeout, allowed_origins=a.allowed_origins,
                       allowed_hosts=a.allowed_hosts, cuda_graphs=a.cuda_graphs)
    server = SpeakServer(cfg)
    print(f"qwen3tts speak server on http://{cfg.host}:{cfg.port}/speak (ws://{cfg.host}:{cfg.port}/api/v1/speak)", file=sys.stderr, flush=True)
    web.run_app(server.app, host=cfg.host, port=cfg.port, print=None, shutdown_timeout=5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
