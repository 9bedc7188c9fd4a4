"""Speak protocol messages (shared/spec/speak-protocol.md): parsing and validation of client
messages, constructors for server messages. Pure Python: no I/O, no torch.

`parse(raw, cfg)` returns a message dict or raises `ProtocolError(code, message)` with the spec's
error code (`INVALID_MESSAGE` for anything malformed, the specific code where there is one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
ENCODINGS = ("pcm16", "pcm32f")
TRANSPORTS = ("binary", "json")
PRIORITIES = ("normal", "high")
ERROR_CODES = ("MODEL_LOADING", "INVALID_MESSAGE", "INVALID_TEXT", "VOICE_NOT_FOUND", "UNSUPPORTED_FORMAT", "UNAUTHORIZED",
               "RATE_LIMITED", "TIMEOUT", "CANCELLED", "SYNTHESIS_ERROR", "GPU_OUT_OF_MEMORY")
RECOVERABLE = {"MODEL_LOADING": True, "INVALID_MESSAGE": True, "INVALID_TEXT": False, "VOICE_NOT_FOUND": False,
               "UNSUPPORTED_FORMAT": False, "UNAUTHORIZED": False, "RATE_LIMITED": True, "TIMEOUT": True, "CANCELLED": True,
               "SYNTHESIS_ERROR": True, "GPU_OUT_OF_MEMORY": True}
MAX_MESSAGE_BYTES = 1 << 20
MAX_FRAME_BYTES = 4 * MAX_MESSAGE_BYTES  # the WebSocket layer's limit: frames up to here reach `parse` and its error
MAX_ID_CHARS = 128
MAX_SEED = 2**63 - 1  # piece i of a long text is seeded with seed + i: any text's pieces stay within 64 bits
_PATH_RE = re.compile(r"""(?<![^\s'"(=\[])(?:[A-Za-z]:)?(?:[/\\][^/\\\s'"<>:]+)+[/\\]([^/\\\s'"<>:]+)""")
_ADDR_RE = re.compile(r"<([^<>]*?) at 0x[0-9a-fA-F]+>")


def redact(message: str) -> str:
    """A message fit for a client: absolute paths cut to their last part, heap addresses
    (`<_io.BytesIO object at 0x...>`) removed."""
    return _ADDR_RE.sub(r"<\1>", _PATH_RE.sub(r"\1", message))


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(message)
        assert code in ERROR_CODES
        self.code, self.message, self.request_id = code, message, request_id


@dataclass
class Limits:
    max_chars: int = 5000
    languages: tuple[str, ...] = ("auto",)


def error(code: str, message: str, request_id: str | None = None, recoverable: bool | None = None) -> dict:
    return {"type": "error", "id": request_id, "code": code, "message": message,
            "recoverable": RECOVERABLE[code] if recoverable is None else recoverable}


def _opt(msg: dict, key: str, typ, what: str):
    v = msg.get(key)
    if v is None:
        return None
    if typ is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, typ)
    if not ok:
        raise ProtocolError("INVALID_MESSAGE", f"{key} must be {what}")
    return v


def check_text(text: str, max_chars: int, request_id: str | None = None, what: str = "text") -> str:
    """The one text rule of every route (WebSocket `speak.text`, OpenAI `input`): stripped,
    non-empty, at most `max_chars`, no NUL, encodable as UTF-8 (no lone surrogates)."""
    text = text.strip()
    if not text:
        raise ProtocolError("INVALID_TEXT", f"{what} is empty", request_id)
    if len(text) > max_chars:
        raise ProtocolError("INVALID_TEXT", f"{what} is longer than {max_chars} characters", request_id)
    if "\x00" in text:
        raise ProtocolError("INVALID_TEXT", f"{what} contains NUL characters", request_id)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("INVALID_TEXT", f"{what} contains unpaired surrogates (not valid Unicode text)", request_id) from None
    return text


def parse(raw, limits: Limits) -> dict:
    """A text frame -> validated message dict with normalised fields."""
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolError("INVALID_MESSAGE", "binary frames are not accepted from clients; send JSON text")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("INVALID_MESSAGE", "message too large")
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("INVALID_MESSAGE", "message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("INVALID_MESSAGE", "message must be a JSON object")
    t = msg.get("type")
    if not isinstance(t, str):
        raise ProtocolError("INVALID_MESSAGE", "message needs a string 'type'")
    if t == "start":
        return _parse_start(msg, limits)
    if t == "speak":
        return _parse_speak(msg, limits)
    if t == "text":
        return _parse_text(msg, limits)
    if t == "cancel":
        return {"type": "cancel"}
    if t == "stop":
        reason = _opt(msg, "reason", str, "a string")
        return {"type": "stop", "reason": (reason or "user_requested")[:200]}
    raise ProtocolError("INVALID_MESSAGE", f"unknown message type {t[:40]!r}")


def _parse_start(msg: dict, limits: Limits) -> dict:
    sr = _opt(msg, "sampleRate", int, "an integer")
    enc = _opt(msg, "encoding", str, "a string")
    voice = _opt(msg, "voice", str, "a string")
    lang = _opt(msg, "language", str, "a string")
    transport = _opt(msg, "transport", str, "a string")
    token = _opt(msg, "authToken", str, "a string")
    contract = _opt(msg, "contractId", str, "a string")
    if transport is not None and transport not in TRANSPORTS:
        raise ProtocolError("INVALID_MESSAGE", f"transport must be one of {', '.join(TRANSPORTS)}")
    if sr is not None and sr not in SAMPLE_RATES:
        raise ProtocolError("UNSUPPORTED_FORMAT", f"sampleRate must be one of {', '.join(map(str, SAMPLE_RATES))}")
    if enc is not None and enc not in ENCODINGS:
        raise ProtocolError("UNSUPPORTED_FORMAT", f"encoding must be one of {', '.join(ENCODINGS)}")
    language = None
    if lang is not None:
        match = [x for x in limits.languages if x.lower() == lang.strip().lower()]
        if not match:
            raise ProtocolError("UNSUPPORTED_FORMAT", f"language must be one of {', '.join(limits.languages)}")
        language = match[0]
    if contract is not None and len(contract) > 256:
        raise ProtocolError("INVALID_MESSAGE", "contractId is too long")
    return {"type": "start", "sampleRate": sr, "encoding": enc, "voice": voice, "language": language,
            "transport": transport, "authToken": token, "contractId": contract}


def _parse_speak(msg: dict, limits: Limits) -> dict:
    rid = _opt(msg, "id", str, "a string")
    if rid is not None and (len(rid) > MAX_ID_CHARS or not rid.strip()):
        raise ProtocolError("INVALID_MESSAGE", f"id must be 1..{MAX_ID_CHARS} characters")
    if "text" not in msg:
        raise ProtocolError("INVALID_MESSAGE", "speak needs 'text'", rid)
    text = msg["text"]
    if not isinstance(text, str):
        raise ProtocolError("INVALID_MESSAGE", "text must be a string", rid)
    prio = _opt(msg, "priority", str, "a string") or "normal"
    if prio not in PRIORITIES:
        raise ProtocolError("INVALID_MESSAGE", "priority must be 'normal' or 'high'", rid)
    seed = _opt(msg, "seed", int, "an integer")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ProtocolError("INVALID_MESSAGE", "seed must be an integer in 0..2**63-1", rid)
    final = _opt(msg, "final", bool, "a boolean")
    if final is False:  # a streamed request: text follows in `text` messages (streamtext.md)
        return dict(_parse_text(msg, limits, rid), type="speak", priority=prio, seed=seed, lookahead=_lookahead(msg, rid))
    text = check_text(text, limits.max_chars, rid)
    return {"type": "speak", "text": text, "priority": prio, "id": rid, "seed": seed, "final": True}


MAX_LOOKAHEAD = 1000


def _lookahead(msg: dict, rid) -> int:
    n = _opt(msg, "lookahead", int, "an integer")
    if n is not None and not 0 <= n <= MAX_LOOKAHEAD:
        raise ProtocolError("INVALID_MESSAGE", f"lookahead must be 0..{MAX_LOOKAHEAD} text tokens", rid)
    return n or 0


def _parse_text(msg: dict, limits: Limits, rid=None) -> dict:
    """`text` (and the text of a `speak` with final: false): a piece of a streamed request, kept
    as sent (no stripping: pieces may cut words and spaces anywhere)."""
    text = msg.get("text", "")
    if not isinstance(text, str):
        raise ProtocolError("INVALID_MESSAGE", "text must be a string", rid)
    final = msg.get("final", False)
    if not isinstance(final, bool):
        raise ProtocolError("INVALID_MESSAGE", "final must be a boolean", rid)
    if len(text) > limits.max_chars:
        raise ProtocolError("INVALID_TEXT", f"text is longer than {limits.max_chars} characters", rid)
    if "\x00" in text:
        raise ProtocolError("INVALID_TEXT", "text contains NUL characters", rid)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("INVALID_TEXT", "text contains a lone surrogate (not valid Unicode)", rid) from None
    return {"type": "text", "text": text, "final": final if msg.get("type") == "text" else False, "id": rid}
