"""A loopback JSON-RPC relay in front of anvil, answering at any path (like a provider URL with a
key in it): it counts what x402gw sends, and can play a broken node on demand."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientSession, web
from lab.webserver import free_port

# (parsed JSON-RPC request) -> (status, body) to answer instead of relaying, or None to relay
Override = Callable[[Any], tuple[int, bytes] | None]


class RpcRelay:
    """``async with RpcRelay(anvil_url) as relay``: ``relay.url(path)`` reaches the node through it.

    ``requests`` counts HTTP requests, ``methods`` every JSON-RPC call (batch members one by one).
    ``override`` answers in the node's place when it returns something.
    """

    def __init__(self, upstream: str, override: Override | None = None) -> None:
        self.upstream = upstream
        self.override = override
        self.requests = 0
        self.methods: list[str] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._http: ClientSession | None = None

    def url(self, path: str = "/") -> str:
        """The relay's address with ``path`` (and query) appended."""
        return f"http://127.0.0.1:{self.port}{path}"

    def reset(self) -> None:
        """Forget the counts so far."""
        self.requests = 0
        self.methods.clear()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        calls = parsed if isinstance(parsed, list) else [parsed]
        self.methods += [c.get("method", "?") for c in calls if isinstance(c, dict)]
        answer = self.override(parsed) if self.override is not None else None
        if answer is None:
            assert self._http is not None
            async with self._http.post(
                self.upstream, data=body, headers={"Content-Type": "application/json"}
            ) as upstream:
                answer = (upstream.status, await upstream.read())
        status, payload = answer
        return web.Response(status=status, body=payload, content_type="application/json")

    async def __aenter__(self) -> RpcRelay:
        self._http = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
