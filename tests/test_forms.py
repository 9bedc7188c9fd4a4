"""Malformed multipart uploads to POST /api/v1/voices through a real server on loopback: each
answers 400 (or 413) with a code, never 500, and nothing is logged as a traceback."""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from conftest import TINY
from server_util import ServerThread
from qwen3tts.server.app import ServerConfig

B = "XyZb"
WAV = (TINY / "reference.wav").read_bytes()
AUDIO = ('Content-Disposition: form-data; name="audio"; filename="a.wav"\r\nContent-Type: audio/wav', WAV)


def form(parts, boundary=B) -> bytes:
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n".encode() + headers.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def field(name, data: bytes, extra=""):
    return (f'Content-Disposition: form-data; name="{name}"' + extra, data)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerThread(ServerConfig(voices_dir=str(tmp_path_factory.mktemp("voices"))))
    yield s
    s.stop()


def post(srv, data: bytes, ctype=f"multipart/form-data; boundary={B}"):
    req = urllib.request.Request(srv.url + "/api/v1/voices", data=data, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


INNER = form([field("x", b"y")], "inner")


@pytest.mark.parametrize("name,parts,status,words", [
    ("bogus charset", [AUDIO, field("transcript", b"hello", "\r\nContent-Type: text/plain; charset=bogus")], 400, "unknown charset"),
    ("nested multipart/mixed", [field("audio", INNER, "\r\nContent-Type: multipart/mixed; boundary=inner")], 400, "nested"),
    ("nested after audio", [AUDIO, field("files", INNER, "\r\nContent-Type: multipart/mixed; boundary=inner")], 400, "nested"),
    ("part header over 8 KB", [AUDIO, field("transcript", b"hello", "\r\nX-Big: " + "a" * 9000)], 400, "over 8 KB"),
    ("part name over 8 KB", [field("a" * 9000, b"hello"), AUDIO], 400, "over 8 KB"),
    ("base64 transfer encoding", [field("audio", WAV, "\r\nContent-Transfer-Encoding: base64")], 400, "Content-Transfer-Encoding"),
    ("gzip content encoding", [AUDIO, field("transcript", b"\x1f\x8b garbage", "\r\nContent-Encoding: gzip")], 400, "Content-Encoding"),
    ("bogus _charset_", [field("_charset_", b"bogus"), AUDIO, field("transcript", b"hello")], 400, "malformed"),
    ("field not in its charset", [AUDIO, field("transcript", b"caf\xe9", "\r\nContent-Type: text/plain; charset=utf-8")], 400, "charset"),
    ("field over 64 KB", [AUDIO, field("description", b"d" * 70000)], 400, "65536 bytes"),
])
def test_malformed_multipart_gets_a_code(srv, caplog, name, parts, status, words):
    with caplog.at_level(logging.ERROR):
        got, body = post(srv, form(parts))
    assert got == status and body["error"]["code"] == "BAD_REQUEST" and words in body["error"]["message"], (name, body)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
    with urllib.request.urlopen(srv.url + "/api/v1/voices", timeout=30) as r:
        assert r.status == 200
