"""ASGI facilitator server: ``POST /verify``, ``POST /settle``, ``GET /supported`` over any Facilitator.

Speaks the x402 facilitator HTTP API, so the official SDK's resource-server middleware (or any
other client) can verify and settle through x402gw's :class:`~x402gw.facilitator.LocalFacilitator`.
Settling spends the operator's gas, so every request must carry a configured bearer token, or
(``allow_unauthenticated=True``) come from a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Iterable
from typing import Any, Final

from pydantic import ValidationError

from x402gw.errors import ChainError, FacilitatorConfigError
from x402gw.exact_evm import INVALID_PAYLOAD
from x402gw.facilitator import (
    Facilitator,
    FacilitatorError,
    FacilitatorUnavailable,
    LocalFacilitator,
    check_bearer_token,
)
from x402gw.middleware import Message, Receive, Scope, Send
from x402gw.wire import FacilitatorRequest, SettleResponse, VerifyResponse, WireModel

MAX_BODY_BYTES: Final = 64 * 1024
log = logging.getLogger("x402gw.facilitator_app")
# Outage bodies are fixed: the cause (redacted) is logged, never sent to the caller.
_UNAVAILABLE: Final = {
    "chain_unavailable": {
        "error": "chain_unavailable",
        "message": "the chain cannot be reached; try again later",
    },
    "upstream_unavailable": {
        "error": "upstream_unavailable",
        "message": "the upstream facilitator cannot be reached; try again later",
    },
}


_UNAUTHORIZED: Final = {"error": "unauthorized", "message": "a valid bearer token is required"}
_FORBIDDEN: Final = {
    "error": "forbidden",
    "message": "this facilitator serves loopback clients only",
}
_CHALLENGE: Final = b'Bearer realm="x402gw-facilitator"'


class FacilitatorApp:
    """``FacilitatorApp(facilitator, tokens=[...])``: an ASGI app; answers results with 200,
    malformed input with 400, requests without a valid bearer token with 401.

    ``tokens``: the accepted bearer tokens (several while rotating). ``allow_unauthenticated``:
    no token, but only clients whose ASGI ``client`` address is loopback (others get 403; behind
    a reverse proxy on the same host every client looks local: use tokens there). A
    :class:`~x402gw.facilitator.LocalFacilitator` must have ``allowed_payments``: otherwise
    anyone could make the operator pay gas for any token. Raises :class:`FacilitatorConfigError`.
    """

    def __init__(
        self,
        facilitator: Facilitator,
        *,
        tokens: str | Iterable[str] | None = None,
        allow_unauthenticated: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        accepted = [tokens] if isinstance(tokens, str) else list(tokens or ())
        self._tokens = tuple(check_bearer_token(t).encode() for t in accepted)
        if self._tokens and allow_unauthenticated:
            raise FacilitatorConfigError("give tokens or allow_unauthenticated=True, not both")
        if not self._tokens and not allow_unauthenticated:
            raise FacilitatorConfigError(
                "FacilitatorApp needs bearer tokens (tokens=[...]), or allow_unauthenticated=True"
                " to serve loopback clients only"
            )
        if isinstance(facilitator, LocalFacilitator) and facilitator.allowed_payments is None:
            raise FacilitatorConfigError(
                "the LocalFacilitator settles any asset and payTo: build it with"
                " allowed_payments=[(asset, pay_to), ...] before serving it"
            )
        self.facilitator = facilitator
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._tokens:
            if not _bearer_ok(scope, self._tokens):
                await _json(send, 401, _UNAUTHORIZED, [(b"www-authenticate", _CHALLENGE)])
                return
        elif not _loopback(scope):
            await _json(send, 403, _FORBIDDEN)
            return
        path = str(scope.get("path", "")).rstrip("/")
        method = str(scope.get("method", "GET")).upper()
        if path == "/supported":
            if method != "GET":
                await _json(send, 405, {"error": "method_not_allowed"})
                return
            await self._guarded(send, "supported", None)
            return
        if path not in ("/verify", "/settle"):
            await _json(send, 404, {"error": "not_found"})
            return
        if method != "POST":
            await _json(send, 405, {"error": "method_not_allowed"})
            return
        endpoint = path[1:]
        body = await _read(receive, self.max_body_bytes)
        if body is None:
            await _json(send, 413, _bad(endpoint, "request body too large"))
            return
        try:
            request = FacilitatorRequest.model_validate_json(body)
        except (ValidationError, ValueError) as exc:
            await _json(send, 400, _bad(endpoint, f"malformed request: {_summary(exc)}"))
            return
        if request.x402_version != request.payment_payload.x402_version:
            await _json(send, 400, _bad(endpoint, "x402Version differs from the payload's"))
            return
        await self._guarded(send, endpoint, request)

    async def _guarded(self, send: Send, endpoint: str, request: FacilitatorRequest | None) -> None:
        try:
            result: WireModel
            if request is None:
                result = await self.facilitator.supported()
            elif endpoint == "verify":
                result = await self.facilitator.verify(
                    request.payment_payload, request.payment_requirements
                )
            else:
                result = await self.facilitator.settle(
                    request.payment_payload, request.payment_requirements
                )
        except ChainError as exc:
            log.warning("facilitator /%s: chain unavailable: %s", endpoint, exc)
            await _json(send, 503, _UNAVAILABLE["chain_unavailable"])
            return
        except (FacilitatorUnavailable, FacilitatorError) as exc:
            log.warning("facilitator /%s: upstream facilitator unavailable: %s", endpoint, exc)
            await _json(send, 503, _UNAVAILABLE["upstream_unavailable"])
            return
        await _json(send, 200, result.to_json_dict())


def _bad(endpoint: str, message: str) -> dict[str, Any]:
    if endpoint == "verify":
        model: WireModel = VerifyResponse(
            is_valid=False, invalid_reason=INVALID_PAYLOAD, invalid_message=message
        )
    else:
        model = SettleResponse(
            success=False, error_reason=INVALID_PAYLOAD, error_message=message, network=""
        )
    return model.to_json_dict()


def _summary(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"{exc.error_count()} validation errors"
    return type(exc).__name__


async def _read(receive: Receive, cap: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > cap:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _bearer_ok(scope: Scope, tokens: tuple[bytes, ...]) -> bool:
    """Exactly one ``Authorization: Bearer <token>`` header naming one of ``tokens``; every
    token is compared in constant time, whatever matched."""
    values = [v for k, v in scope.get("headers", []) if bytes(k).lower() == b"authorization"]
    if len(values) != 1:
        return False
    scheme, _, credentials = bytes(values[0]).strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    credentials = credentials.strip()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(credentials, token)
    return matched


def _loopback(scope: Scope) -> bool:
    """Whether the ASGI ``client`` is a loopback IP address (not a name, not unknown)."""
    client = scope.get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


async def _json(
    send: Send,
    status: int,
    data: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(data, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(extra_headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
