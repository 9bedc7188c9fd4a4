"""Reading the multipart/form-data body of `POST /api/v1/voices`: flat parts only (a nested
multipart part is refused), every part read raw and bounded (no Content-Encoding or
Content-Transfer-Encoding is honoured: browsers send neither, and a compressed part would be a
decode bomb), text fields decoded with their declared charset. Anything malformed raises
`FormError` with its HTTP status and code, never a server error.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

TEXT_FIELDS = ("transcript", "name", "id", "language", "mode", "description")
MAX_FIELD_BYTES = 65536
PLAIN = ("", "identity", "binary", "7bit", "8bit")


class FormError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _read(part: BodyPartReader, limit: int, what: str, status: int, code: str) -> bytes:
    buf = bytearray()
    while chunk := await part.read_chunk(65536):
        buf += chunk
        if len(buf) > limit:
            raise FormError(status, code, f"{what} is over the {limit / 2**20:g} MB limit" if limit >= 2**20 else f"{what} is over {limit} bytes")
    return bytes(buf)


async def read_voice_form(request: web.Request, audio_limit: int) -> tuple[dict[str, str], bytes | None]:
    """-> (text fields, audio bytes or None)."""
    if not request.content_type.startswith("multipart/"):
        raise FormError(400, "BAD_REQUEST", "send multipart/form-data with an 'audio' file")
    fields: dict[str, str] = {}
    audio = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise FormError(400, "BAD_REQUEST", "nested multipart parts are not accepted; send flat multipart/form-data")
            for h in ("Content-Encoding", "Content-Transfer-Encoding"):
                if part.headers.get(h, "").strip().lower() not in PLAIN:
                    raise FormError(400, "BAD_REQUEST", f"{h} on a form part is not supported; send the part as it is")
            if part.name == "audio":
                audio = await _read(part, audio_limit, "audio", 413, "TOO_LARGE")
            elif part.name in TEXT_FIELDS:
                raw = await _read(part, MAX_FIELD_BYTES, f"field '{part.name}'", 400, "BAD_REQUEST")
                fields[part.name] = raw.decode(part.get_charset("utf-8"))[:10000]
    except web.HTTPRequestEntityTooLarge:
        raise FormError(413, "TOO_LARGE", f"upload over the {audio_limit / 2**20:g} MB limit") from None
    except HttpProcessingError:  # e.g. a part header over 8 KB
        raise FormError(400, "BAD_REQUEST", "malformed multipart body (a part header is over 8 KB or malformed)") from None
    except LookupError:  # a part's unknown charset
        raise FormError(400, "BAD_REQUEST", "malformed multipart body (a part names an unknown charset)") from None
    except UnicodeDecodeError:
        raise FormError(400, "BAD_REQUEST", "malformed multipart body (a text field is not in its charset)") from None
    except (ValueError, AssertionError, RuntimeError) as e:  # aiohttp's multipart parser reports malformed input so
        raise FormError(400, "BAD_REQUEST", f"malformed multipart body ({e})"[:300]) from None
    return fields, audio
