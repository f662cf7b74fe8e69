"""A loopback webhook receiver for the tests: records each request and answers with the next
status of its script (204 once the script is used up), optionally after a delay."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lab.webserver import UvicornThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """The receiver's script and log; ``url`` once started."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    body_size: int = 0
    location: str = ""
    """A ``Location`` header on every answer (a redirecting receiver)."""
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append(Received(request.url.path, dict(request.headers), body))
            status = self.statuses.pop(0) if self.statuses else 204
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Location": self.location} if self.location else None
        return Response(b"x" * self.body_size, status_code=status, headers=headers)

    def app(self) -> Any:
        """The ASGI app: every path under ``/`` records."""
        return Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])])


@contextlib.contextmanager
def running_receiver(receiver: Receiver | None = None) -> Iterator[Receiver]:
    """Serve a :class:`Receiver` on 127.0.0.1 while the block runs."""
    receiver = receiver or Receiver()
    with UvicornThread(receiver.app()) as thread:
        receiver.url = thread.url
        yield receiver
