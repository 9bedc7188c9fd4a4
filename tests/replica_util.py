"""Real `python -m qwen3tts.serve` processes (replicas on one voices folder) and an HAProxy in
front of them, all on loopback, for the multi-replica tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import TINY_MODEL
from server_util import free_port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def gauges(url: str) -> dict[str, float]:
    """`/metrics` lines without labels, as {name: value}."""
    _, text = http_get(url + "/metrics")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


class Replica:
    """One server process on the tiny model (greedy, preloaded), logging to `log`."""

    def __init__(self, voices_dir: Path, log: Path, *extra: str, max_new_tokens: int = 200):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/v1/speak"
        self.log = log
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "qwen3tts.serve", "--model", str(TINY_MODEL), "--voices-dir", str(voices_dir),
               "--port", str(self.port), "--preload", "--greedy", "--max-new-tokens", str(max_new_tokens), *extra]
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Poll /readyz until 200; every answer is kept in `ready_seen`."""
        self.ready_seen: list[tuple[int, dict]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early: {self.log.read_text()[-2000:]}"
            try:
                self.ready_seen.append(http_get(self.url + "/readyz", timeout=2))
                if self.ready_seen[-1][0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def haproxy_path() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None)


class HAProxy:
    """leastconn over the replicas, WebSocket passthrough, health checks on /readyz every 200 ms."""

    def __init__(self, replicas: list[Replica], workdir: Path):
        self.port, stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/v1/speak"
        self.stats_url = f"http://127.0.0.1:{stats_port}/stats"
        servers = "\n".join(f"    server r{i} 127.0.0.1:{r.port} check inter 200ms fall 1 rise 2" for i, r in enumerate(replicas))
        cfg = f"""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 120s
    option redispatch
    retries 2
listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
frontend speak
    bind 127.0.0.1:{self.port}
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(cfg)
        self.log = workdir / "haproxy.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([haproxy_path(), "-db", "-f", str(self.config)], stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"haproxy exited: {self.log.read_text()}"
            try:
                if http_get(self.url + "/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"haproxy not serving: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
