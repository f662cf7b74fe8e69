"""An HTTP request's ASGI scope, for tests and benchmarks that drive an app without a client."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def http_scope(
    method: str,
    path: str,
    body_length: int,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    app: Any = None,
) -> dict[str, Any]:
    """The scope of ``method path`` with a JSON body of ``body_length`` bytes, as a server on
    ``bavlio.test`` would pass it (``headers`` after host, content type and length)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bavlio.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_length).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("bavlio.test", 80),
    }
    if app is not None:
        scope["state"] = {}
        scope["app"] = app
    return scope
