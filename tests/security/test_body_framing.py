"""Attack 2 of the second pass: body limits under every framing.

``Transfer-Encoding: chunked`` together with a small ``Content-Length`` made the limit trust the
declared length while the server read the chunks: a 5 MB spec reached the handler. The limit now
counts the bytes as they stream, on every route, whatever the headers say.
"""

from __future__ import annotations

import socket

import pytest

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from tests.api_server import serving

MB = 2**20


@pytest.fixture(scope="module")
def base(sqlite_url):
    app = create_app(Settings(database_url=sqlite_url, max_body_kb=64), dashboard=False)
    with serving(app) as url:
        yield url


def raw_request(base: str, method: str, path: str, headers: list[str], chunks: list[bytes]) -> int:
    """Send ``chunks`` chunked (with whatever other headers are given); the response's status."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked", *headers, "", ""]
        sock.sendall("\r\n".join(head).encode())
        try:
            for chunk in chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body ended
        response = b""
        while b"\r\n" not in response:
            data = sock.recv(4096)
            if not data:
                break
            response += data
    return int(response.split(b" ", 2)[1])


def big_spec_chunks(n_bytes: int) -> list[bytes]:
    """A JSON spec of ``n_bytes`` (its description is the filler), in 64 KiB chunks."""
    head = b'{"name": "big", "data": {"name": "sine"}, "budget": {"n_trials": 1}, "description": "'
    body = head + b"x" * (n_bytes - len(head) - 2) + b'"}'
    return [body[i : i + 65536] for i in range(0, len(body), 65536)]


@pytest.mark.parametrize(
    "headers",
    [
        ["Content-Type: application/json"],  # chunked, no length
        ["Content-Type: application/json", "Content-Length: 10"],  # chunked + a small length
    ],
    ids=["chunked", "chunked+content-length"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/studies"), ("POST", "/v1/studies/x/cancel"), ("GET", "/v1/studies"), ("DELETE", "/v1/datasets/x")],
)
def test_a_streamed_body_over_the_limit_is_413_on_every_route(base, headers, method, path):
    assert raw_request(base, method, path, headers, big_spec_chunks(5 * MB)) == 413


def test_a_body_within_the_limit_still_works_chunked(base):
    status = raw_request(
        base,
        "POST",
        "/v1/studies",
        ["Content-Type: application/json"],
        [b'{"name": "small", "data": {"name": "sine", "params": {"n_series": 20, "length": 20}, "window": 8}, ',
         b'"budget": {"n_trials": 1, "max_epochs": 1}}'],
    )  # fmt: skip
    assert status == 201


async def _asgi_post(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """POST /v1/studies straight into the ASGI app; (status, bytes the app read)."""
    sent: list[dict] = []
    read = 0
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        nonlocal read
        if not queue:
            return {"type": "http.disconnect"}
        message = queue.pop(0)
        read += len(message["body"])
        return message

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/studies",
        "raw_path": b"/v1/studies",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), read


def test_the_app_reads_no_more_than_the_limit_whatever_the_headers(sqlite_url):
    import asyncio

    app = create_app(Settings(database_url=sqlite_url, max_body_kb=64), dashboard=False)
    chunks = big_spec_chunks(5 * MB)
    for headers in (
        [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"), (b"content-length", b"10")],
        [(b"content-type", b"application/json"), (b"content-length", b"10")],  # a length that lies
        [(b"content-type", b"application/json")],  # no length at all
    ):
        status, read = asyncio.run(_asgi_post(app, headers, chunks))
        assert status == 413, headers
        assert read <= 64 * 1024 + 65536, f"{read} bytes read before refusing ({headers})"
