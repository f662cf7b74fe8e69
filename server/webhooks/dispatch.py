"""The dispatcher: claims due deliveries, signs and POSTs them to checked addresses, books each
outcome. Responses are read only for their status (the body is discarded, bounded); an error
records our own code (``timeout``, ``connect_error``, ``destination_forbidden`` ...), never the
receiver's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx

from server.webhooks.destination import DestinationError, parse_url, resolve
from server.webhooks.signing import headers_for
from server.webhooks.store import DueDelivery, WebhookStore

__all__ = ["REQUEST_TIMEOUT", "Dispatcher"]

REQUEST_TIMEOUT = 10.0
"""Seconds a receiver has to answer (connect, send, first byte and body together)."""
_MAX_RESPONSE_BYTES = 64 * 1024
_USER_AGENT = "Bavlio-Webhooks/1"

log = logging.getLogger("server.webhooks")


class Dispatcher:
    """Delivers due webhooks in batches; run :meth:`run` as a task, or :meth:`tick` in tests."""

    def __init__(
        self,
        store: WebhookStore,
        *,
        http: httpx.AsyncClient | None = None,
        allow_private: bool = False,
        allow_http: bool = False,
        lease_seconds: float = 60.0,
        batch: int = 20,
        poll_seconds: float = 1.0,
        timeout: float = REQUEST_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._http = http or httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT, follow_redirects=False, trust_env=False
        )
        self._owns_http = http is None
        self.allow_private = allow_private
        self.allow_http = allow_http
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.clock = clock
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    async def tick(self) -> int:
        """Claim and attempt one batch of due deliveries; how many were attempted."""
        claimed = await self.store.claim_due(
            self.worker_id, self.clock(), lease_seconds=self.lease_seconds, limit=self.batch
        )
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def run(self) -> None:
        """Deliver until cancelled: a batch, then a pause when nothing was due."""
        while True:
            try:
                busy = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end the loop
                log.exception("webhook dispatch failed; retrying")
                busy = 0
            if not busy:
                await asyncio.sleep(self.poll_seconds)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dispatcher]:
        """Run :meth:`run` as a task for the duration of the block, then stop and close."""
        task = asyncio.create_task(self.run(), name="webhook-dispatcher")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this dispatcher made it."""
        if self._owns_http:
            await self._http.aclose()

    async def _attempt(self, delivery: DueDelivery) -> None:
        status, error = await self._post(delivery)
        await self.store.record_attempt(
            delivery, self.worker_id, self.clock(), status=status, error=error
        )

    async def _post(self, delivery: DueDelivery) -> tuple[int | None, str | None]:
        try:
            destination = parse_url(
                delivery.url, allow_http=self.allow_http, allow_private=self.allow_private
            )
            address = await resolve(destination, allow_private=self.allow_private)
        except DestinationError as exc:
            return None, exc.code
        headers = headers_for(delivery.secret, delivery.id, int(self.clock()), delivery.body)
        headers.update(
            {
                "Host": destination.host_header,
                "Content-Type": "application/json",
                "User-Agent": _USER_AGENT,
            }
        )
        extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
        try:
            async with (
                asyncio.timeout(REQUEST_TIMEOUT),
                self._http.stream(
                    "POST",
                    destination.url_for(address),
                    content=delivery.body,
                    headers=headers,
                    extensions=extensions,
                    timeout=self.timeout,
                ) as response,
            ):
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > _MAX_RESPONSE_BYTES:
                        break
                return response.status_code, None if 200 <= response.status_code < 300 else (
                    f"http_{response.status_code}"
                )
        except (TimeoutError, httpx.TimeoutException):
            return None, "timeout"
        except httpx.HTTPError:
            return None, "connect_error"
