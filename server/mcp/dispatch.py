"""In-process HTTP calls: a tool call becomes an ASGI request to the same app, so it meets the
same keyed guard (key, scopes, plan, rate limit, Idempotency-Key), handler, error envelope and
payment gate as the REST call it stands for. Nothing here goes over a socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.types import ASGIApp, Message

__all__ = ["Captured", "Peer", "asgi_scope", "call_app", "fill_path", "synthetic_request"]

MAX_RESPONSE = 16 * 1024 * 1024
"""A response larger than this is not buffered for a tool result (no tool answers that much)."""

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Captured:
    """A response as the app sent it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None when empty or not JSON)."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Peer:
    """Who called and where: the MCP request's client address, scheme, server and Host, so
    the operation sees the caller (per-address limits) and its own public URL."""

    client: tuple[str, int] | None = None
    scheme: str = "http"
    server: tuple[str, int] | None = None
    host: bytes | None = None


def asgi_scope(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    headers: Headers = (),
    peer: Peer | None = None,
) -> dict[str, Any]:
    """An HTTP scope for ``path`` on ``app``; ``path`` stays percent-quoted in ``scope["path"]``
    too, so a quoted ``/`` in a parameter never becomes a segment (the route sees the id whole
    and refuses it)."""
    peer = peer or Peer()
    host = [(b"host", peer.host)] if peer.host else []
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": peer.scheme,
        "server": peer.server or ("mcp.internal", 80),
        "client": peer.client or ("127.0.0.1", 0),
        "root_path": "",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": urlencode(dict(query or {})).encode("ascii"),
        "headers": [*host, *((k.lower(), v) for k, v in headers if k.lower() != b"host")],
        "app": app,
        "state": {},
    }


def fill_path(template: str, params: Mapping[str, Any]) -> str:
    """``/a/{id}/b`` with each parameter percent-quoted (a value cannot add path segments)."""
    path = template
    for name, value in params.items():
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    return path


def _body_receiver(body: bytes, answered: asyncio.Event | None = None) -> Any:
    """The body, then (as a connected client) nothing until ``answered`` is set: a disconnect
    before the answer would tell the payment gate the client left (and it would not answer)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if answered is not None:
            await answered.wait()
        return {"type": "http.disconnect"}

    return receive


def synthetic_request(scope: dict[str, Any], body: bytes) -> Request:
    """A Starlette request over ``scope`` whose body is ``body``."""
    return Request(scope, _body_receiver(body))


async def call_app(app: ASGIApp, scope: dict[str, Any], body: bytes) -> Captured:
    """Run ``app`` on ``scope`` with ``body``; the response it sends, buffered."""
    status = 500
    headers: dict[str, str] = {}
    chunks: list[bytes] = []
    size = 0

    async def send(message: Message) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for key, value in message.get("headers", []):
                headers[key.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > MAX_RESPONSE:
                raise ValueError("response too large for a tool result")
            chunks.append(chunk)

    answered = asyncio.Event()

    async def sending(message: Message) -> None:
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    try:
        await app(scope, _body_receiver(body, answered), sending)
    finally:
        answered.set()
    return Captured(status, headers, b"".join(chunks))
