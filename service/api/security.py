"""Bearer-token authentication, browser guards and request-body limits, as plain ASGI middleware.

All wrap the whole application, so the optuna-dashboard mount is covered exactly like our own
routes. Tokens are compared in constant time and never logged. A browser reaching the dashboard
gets a Basic challenge too (any user name, the token as password), since it cannot send a bearer
header by itself; Basic credentials count on the dashboard's paths only, so a browser that holds
them cannot drive ``/v1`` from another site. :class:`BrowserGuard` refuses what only a browser
tricked by another site would send (cross-site writes, form bodies, foreign ``Host`` names).
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Sequence

from rnntune.service.config import Token

PRINCIPAL_KEY = "rnntune_token"  # the request state's entry: the Token that authenticated it
OPEN_PATHS = ("/healthz", "/readyz")
# optuna-dashboard's root-fixed paths (and "/", which redirects there): where a browser goes.
DASHBOARD_PREFIXES = (
    "/dashboard",
    "/api",
    "/static",
    "/csv",
    "/artifacts",
    "/sql-profiler",
    "/incompatible-rdb-schema",
)
DASHBOARD_FILES = ("/", "/favicon.ico")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # anything else: 405
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
BODY_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")
UPLOAD_PREFIX = "/v1/datasets"  # the one place a multipart body is accepted


def is_dashboard_path(path: str) -> bool:
    return path in DASHBOARD_FILES or any(path == p or path.startswith(p + "/") for p in DASHBOARD_PREFIXES)


def allowed_hosts(setting: str | None, bind_host: str | None) -> list[str]:
    """``RNNTUNE_ALLOWED_HOSTS`` as a list; unset: the loopback names when bound to loopback (a
    DNS-rebinding page then cannot reach a tokenless API), else any (``["*"]``)."""
    if setting is not None and setting.strip():
        return [h.strip().lower() for h in setting.split(",") if h.strip()]
    if bind_host is not None and is_loopback(bind_host):
        return list(LOOPBACK_HOSTS)
    return ["*"]


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _send_json(send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenAuth:
    """401 with ``WWW-Authenticate`` unless the request carries one of the tokens. The token's
    name and role go into the request's state (``service.api.access`` reads them); with
    ``enforce_roles`` (owners enforced) a ``read`` token may only read, and only an ``admin`` may
    write through the dashboard (its routes cannot tell whose study they change): 403."""

    def __init__(self, app, tokens: list[Token], enforce_roles: bool = False):
        self.app = app
        self.tokens = [(t.secret.encode(), t) for t in tokens]
        self.enforce_roles = enforce_roles

    def _presented(self, scope) -> bytes | None:
        basic_ok = scope["type"] == "http" and is_dashboard_path(scope["path"])
        for name, value in scope.get("headers", ()):
            if name != b"authorization":
                continue
            scheme, _, credential = value.partition(b" ")
            scheme = scheme.lower()
            if scheme == b"bearer":
                return credential.strip()
            if scheme == b"basic" and basic_ok:
                try:
                    return base64.b64decode(credential.strip(), validate=True).partition(b":")[2]
                except ValueError:
                    return None
        return None

    def _match(self, presented: bytes | None) -> Token | None:
        if presented is None:
            return None
        found = None
        for secret, token in self.tokens:  # no early exit: time does not depend on which token matched
            if hmac.compare_digest(presented, secret) and found is None:
                found = token
        return found

    def _refusal(self, scope, token: Token) -> str | None:
        if not self.enforce_roles or scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return None
        who = f"token {token.name!r}" if token.name else "this token"
        if token.role == "read":
            return f"{who} has the role 'read': it may only read"
        if token.role != "admin" and is_dashboard_path(scope["path"]):
            return f"{who} has the role {token.role!r}: only an admin may change studies through the dashboard"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        token = self._match(self._presented(scope))
        if token is not None:
            refusal = self._refusal(scope, token)
            if refusal:
                return await _send_json(send, 403, refusal)
            scope.setdefault("state", {})[PRINCIPAL_KEY] = token
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # websockets and anything newer: a token or nothing
            return await send({"type": "websocket.close", "code": 1008})
        if scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        challenge = b'Bearer realm="rnntune"'
        if is_dashboard_path(scope["path"]):  # a browser can answer this one by itself
            challenge += b', Basic realm="rnntune"'
        await _send_json(send, 401, "missing or invalid API token", [(b"www-authenticate", challenge)])


class BrowserGuard:
    """What only a browser led by another site would send, refused before any route runs:

    - a method outside :data:`HTTP_METHODS` (``TRACE``, ``CONNECT``, WebDAV): 405;
    - a write (POST/PUT/PATCH/DELETE) from another site, by ``Sec-Fetch-Site`` or an ``Origin``
      that is not this server's own: 403;
    - a write whose body is not JSON or YAML (multipart on uploads only): 415; HTML forms and
      ``text/plain`` bodies are what a cross-site page can send without a CORS preflight;
    - a websocket (no route takes one).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"]
        if method not in HTTP_METHODS:
            allow = ", ".join(HTTP_METHODS).encode()
            return await _send_json(send, 405, f"method {method} is not allowed", [(b"allow", allow)])
        if method in SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = {
            k: v
            for k, v in scope.get("headers", ())
            if k in (b"origin", b"sec-fetch-site", b"host", b"content-type", b"content-length", b"transfer-encoding")
        }
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        if site and site not in ("same-origin", "none"):
            return await _send_json(send, 403, f"cross-site requests may not change anything (Sec-Fetch-Site: {site})")
        origin = headers.get(b"origin")
        if origin is not None and not _same_origin(origin.decode("latin-1"), scope, headers.get(b"host")):
            return await _send_json(send, 403, "cross-site requests may not change anything (Origin is another site)")
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        if content_type or has_body:
            accepted = BODY_TYPES + (("multipart/form-data",) if scope["path"].startswith(UPLOAD_PREFIX) else ())
            if content_type not in accepted:
                return await _send_json(
                    send,
                    415,
                    f"a request body must be one of {', '.join(accepted)}, but got {content_type or 'none'!r}",
                )
        return await self.app(scope, receive, send)


def _same_origin(origin: str, scope, host: bytes | None) -> bool:
    """``Origin`` names this server: the same scheme and host:port the request was sent to."""
    from urllib.parse import urlsplit

    if host is None:
        return False
    parts = urlsplit(origin)
    scheme = scope.get("scheme", "http")
    default_port = {"http": 80, "https": 443}.get(scheme)
    try:
        origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    target = urlsplit(f"{scheme}://{host.decode('latin-1')}")
    try:
        target_port = target.port or default_port
    except ValueError:
        return False
    # Behind a TLS proxy the server sees http while the browser says https: compare host:port.
    return (
        bool(parts.hostname)
        and parts.hostname == target.hostname
        and (origin_port == target_port or parts.scheme != scheme)
    )


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for bodies over the limit, before the handler sees more than the limit, whatever the
    framing: the bytes are counted as they stream (``receive`` is wrapped), so a chunked body,
    a chunked body that also declares a small ``Content-Length``, and a body with no length at
    all are held to the same limit. A declared length over the limit is refused before any byte
    is read. ``limits`` maps a path to its own limit for POSTs (uploads); any other request to it,
    or below it, has the default."""

    def __init__(self, app, default: tuple[int, str], limits: dict[str, tuple[int, str]] | None = None):
        self.app = app
        self.default = default  # (bytes, what the limit is called)
        self.limits = {path.rstrip("/"): limit for path, limit in (limits or {}).items()}

    def _limit(self, method: str, path: str) -> tuple[int, str]:
        return self.limits.get(path.rstrip("/"), self.default) if method == "POST" else self.default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, name = self._limit(scope["method"], scope["path"])
        over = f"request body over the {name} ({limit} bytes)"
        declared = [v for k, v in scope.get("headers", ()) if k == b"content-length"]
        for value in declared:  # a hint only: the count below is what holds
            if not (value.isascii() and value.strip().isdigit()):
                return await _send_json(send, 400, "invalid Content-Length")
            if int(value) > limit:
                return await _send_json(send, 413, over)
        if limit <= 1 << 20:
            # Small limits (specs, control requests): read it all first, so that a handler never
            # runs on a body over the limit.
            body = await _read_within(receive, limit)
            if body is None:
                return await _send_json(send, 413, over)
            return await self.app(scope, _replay(body, receive), send)
        seen, started = 0, False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, over)


async def _read_within(receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes (or the client left)."""
    chunks, seen, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        seen += len(chunks[-1])
        if seen > limit:
            return None
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands over ``body`` once, then passes through (disconnects)."""
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
