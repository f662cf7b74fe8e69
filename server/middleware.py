"""ASGI middleware: request ids, and a last-resort 500 in the error envelope.

Both are plain ASGI callables so they wrap anything, including a payment middleware.
"""

from __future__ import annotations

import logging
import re
import secrets
import traceback

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_response
from server.redact import redact

__all__ = ["CatchAllMiddleware", "RequestIdMiddleware", "new_request_id"]

log = logging.getLogger("server")

HEADER = b"x-request-id"
_TRACEBACK = 20_000  # characters of a logged traceback
_ACCEPTABLE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    """A fresh ``req_`` id: 24 hex characters of randomness."""
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    """Echo a well-formed ``X-Request-Id`` or mint one; store it in ``scope["state"]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(HEADER)
        request_id = (
            incoming.decode("ascii")
            if incoming is not None and _ACCEPTABLE.match(incoming)
            else new_request_id()
        )
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                headers.append((HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class CatchAllMiddleware:
    """Turn any exception that escaped the handlers into a 500 envelope without internals.

    A client that went away while its body was read (``ClientDisconnect``) is no error: nobody is
    left to answer, so it is logged in one line at debug level and nothing is sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            log.debug("client disconnected (request %s)", scope.get("state", {}).get("request_id"))
        except Exception as exc:
            request = Request(scope)
            log.error(  # the traceback with URLs redacted: messages may quote upstream URLs
                "unhandled error (request %s)\n%s",
                request.scope.get("state", {}).get("request_id"),
                redact("".join(traceback.format_exception(exc)).rstrip(), limit=_TRACEBACK),
            )
            if started:
                raise
            error = ApiError("internal_error", "An internal error occurred; it has been logged.")
            await error_response(error, request)(scope, receive, send)
