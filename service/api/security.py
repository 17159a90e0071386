"""Bearer-token authentication and request-body limits, as plain ASGI middleware.

Both wrap the whole application, so the optuna-dashboard mount is covered exactly like our own
routes. Tokens are compared in constant time and never logged. A browser reaching the dashboard
gets a Basic challenge too (any user name, the token as password), since it cannot send a bearer
header by itself.
"""

from __future__ import annotations

import base64
import hmac
import json

OPEN_PATHS = ("/healthz", "/readyz")


async def _send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
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
    """401 with ``WWW-Authenticate`` unless the request carries one of the tokens."""

    def __init__(self, app, tokens: list[str]):
        self.app = app
        self.tokens = [t.encode() for t in tokens]

    def _presented(self, scope) -> bytes | None:
        for name, value in scope.get("headers", ()):
            if name != b"authorization":
                continue
            scheme, _, credential = value.partition(b" ")
            scheme = scheme.lower()
            if scheme == b"bearer":
                return credential.strip()
            if scheme == b"basic":
                try:
                    return base64.b64decode(credential.strip(), validate=True).partition(b":")[2]
                except ValueError:
                    return None
        return None

    def _valid(self, presented: bytes | None) -> bool:
        if presented is None:
            return False
        ok = False
        for token in self.tokens:  # no early exit: time does not depend on which token matched
            ok |= hmac.compare_digest(presented, token)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._valid(self._presented(scope)):
            return await self.app(scope, receive, send)
        challenge = b'Bearer realm="rnntune", Basic realm="rnntune"'
        await _send_json(send, 401, "missing or invalid API token", [(b"www-authenticate", challenge)])


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for bodies over the limit, declared (Content-Length) or streamed (chunked), before
    the handler sees them. ``limits`` maps a path prefix to its own limit (uploads)."""

    def __init__(self, app, default: tuple[int, str], limits: dict[str, tuple[int, str]] | None = None):
        self.app = app
        self.default = default  # (bytes, what the limit is called)
        self.limits = sorted((limits or {}).items(), key=lambda kv: -len(kv[0]))

    def _limit(self, path: str) -> tuple[int, str]:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        limit, name = self._limit(scope["path"])
        over = f"request body over the {name} ({limit} bytes)"
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                return await _send_json(send, 400, "invalid Content-Length")
            if too_big:
                return await _send_json(send, 413, over)
            return await self.app(scope, receive, send)

        # No length given (chunked): count as it streams; the app never sees more than the limit.
        seen = 0
        started = False

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

        if limit <= 1 << 20:
            # Small limits (specs): read it all first, so that the handler never runs at all.
            chunks, more = [], True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                if seen > limit:
                    return await _send_json(send, 413, over)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, send)
        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, over)
