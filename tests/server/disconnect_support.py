"""Drive an ASGI app as a client that goes away: halfway through its body (``"body"``), or once
its body is sent, while the handler runs and before any answer is read (``"answer"``)."""

from __future__ import annotations

import json
from typing import Any, Literal

from lab.asgi import http_scope
from starlette.types import ASGIApp

Cut = Literal["body", "answer"]


async def gone(
    app: ASGIApp,
    method: str,
    path: str,
    headers: dict[str, str],
    payload: Any = None,
    *,
    cut: Cut,
) -> list[dict[str, Any]]:
    """Send ``method path`` with ``payload`` as JSON, the client leaving at ``cut``; the
    messages the app sent (to nobody)."""
    # serialised as httpx does, so a retry through httpx has the same fingerprint
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    if cut == "body":
        incoming = [{"type": "http.request", "body": body[: len(body) // 2], "more_body": True}]
    else:
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    encoded = ((k.lower().encode(), v.encode()) for k, v in headers.items())
    scope = http_scope(method, path, len(body), encoded, app=app)
    await app(scope, receive, send)
    return sent


def status_of(sent: list[dict[str, Any]]) -> int | None:
    """The status the app answered with, None when it sent nothing."""
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    return int(starts[0]) if starts else None
