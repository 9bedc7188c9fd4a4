"""Who may talk to the server from a browser: the Origin / Host policy (every route, the
WebSocket upgrade included).

* **Origin.** A request with an `Origin` header (browsers send one on WebSocket upgrades, on
  cross-site POSTs and on CORS requests) is refused with 403 unless that origin is the server's
  own (`scheme://host:port` the request was addressed to, from its `Host` header) or is listed in
  `--allowed-origins` (comma list; `*` allows every origin). Clients that send no `Origin`
  (curl, SDKs, other servers) are not affected. Responses to a listed foreign origin carry CORS
  headers, and its preflight `OPTIONS` requests are answered.
* **Host** (DNS-rebinding guard). When the server listens on a loopback address, a request whose
  `Host` is not a loopback name or address (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`) is
  refused with 403 unless that host is listed in `--allowed-hosts` (comma list of `host` or
  `host:port`; `*` allows every host). A page on `http://evil.example` whose name was rebound to
  127.0.0.1 sends `Host: evil.example` and is refused.

`token_ok` is the bearer-token check (`--auth-token`) shared by the HTTP routes and the session.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
CORS_KEY = web.RequestKey("cors", dict)


def is_loopback(name: str) -> bool:
    name = (name or "").strip().strip("[]").rstrip(".").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(host: str) -> tuple[str, int | None]:
    """`Host` header value -> (lower-case name without brackets, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8765
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, port = host.split(":")
    else:
        name, port = host, ""
    try:
        return name.rstrip("."), int(port) if port else None
    except ValueError:
        return name.rstrip("."), -1


def _origin_key(scheme: str, name: str, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, name.lower().rstrip("."), port if port is not None else DEFAULT_PORTS.get(scheme)


def _parse_origin(origin: str) -> tuple[str, str, int | None] | None:
    try:
        u = urlsplit(origin.strip())
        if not u.scheme or not u.hostname:
            return None
        return _origin_key(u.scheme, u.hostname, u.port)
    except ValueError:
        return None


def _list(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


class AccessPolicy:
    def __init__(self, bind_host: str, allowed_origins: str | None = None, allowed_hosts: str | None = None):
        origins = _list(allowed_origins)
        self.any_origin = "*" in origins
        self.origins = {k for k in (_parse_origin(o) for o in origins if o != "*") if k is not None}
        hosts = _list(allowed_hosts)
        self.any_host = "*" in hosts
        self.hosts = {split_host(h) for h in hosts if h != "*"}
        self.guard_host = is_loopback(bind_host)

    def host_allowed(self, host: str | None) -> bool:
        if not self.guard_host or self.any_host or not host:  # no Host header: not a browser
            return True
        name, port = split_host(host)
        return is_loopback(name) or (name, None) in self.hosts or (name, port) in self.hosts

    def origin_allowed(self, request: web.Request, origin: str) -> tuple[bool, bool]:
        """(allowed, foreign): foreign origins that are allowed get CORS headers."""
        key = _parse_origin(origin)
        host = request.headers.get("Host")
        if key is not None and host:
            name, port = split_host(host)
            if key == _origin_key(request.scheme, name, port):
                return True, False
        if self.any_origin or (key is not None and key in self.origins):
            return True, True
        return False, True

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if not self.host_allowed(request.headers.get("Host")):
            return _forbidden("FORBIDDEN_HOST", "this server only answers requests addressed to a loopback name; list other hosts "
                                                "in --allowed-hosts")
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        ok, foreign = self.origin_allowed(request, origin)
        if not ok:
            return _forbidden("FORBIDDEN_ORIGIN", "requests from other sites are refused; list the origin in --allowed-origins")
        if not foreign:
            return await handler(request)
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": "*"}
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={**cors, "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                                                     "Access-Control-Allow-Headers": "Authorization, Content-Type",
                                                     "Access-Control-Max-Age": "600"})
        request[CORS_KEY] = cors  # added when the response's headers go out (`on_prepare`), streamed ones included
        return await handler(request)

    @staticmethod
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        """`app.on_response_prepare` hook: CORS headers for an allowed foreign origin."""
        cors = request.get(CORS_KEY)
        if cors:
            response.headers.update(cors)


def _forbidden(code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=403)


def token_ok(token, expected: str) -> bool:
    """Constant-time token check; any string (lone surrogates included) is just a wrong token."""
    if not isinstance(token, str):
        return False
    return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
