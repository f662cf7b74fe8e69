"""The one error envelope every response uses, and the exceptions handlers raise to produce it.

Hierarchy (each class fixes an HTTP status and an envelope ``type``)::

    ApiError                      500 api_error
    ├── InvalidRequest            400 invalid_request_error
    │   └── RequestTooLarge       413 invalid_request_error
    ├── Unauthorized              401 authentication_error
    ├── InsufficientCredits       402 payment_required
    ├── Forbidden                 403 permission_error
    ├── NotFound                  404 invalid_request_error
    ├── MethodNotAllowed          405 invalid_request_error
    ├── Conflict                  409 invalid_request_error
    ├── Unprocessable             422 invalid_request_error
    ├── RateLimited               429 rate_limit_error
    └── ServiceUnavailable        503 api_error

The x402 gate's refusals (402 challenges, 429s) are rendered into the same envelope by
:func:`render_gate_error`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = [
    "ApiError",
    "Conflict",
    "ErrorBody",
    "ErrorEnvelope",
    "Forbidden",
    "InsufficientCredits",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "RateLimited",
    "RequestTooLarge",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "database_unavailable",
    "error_response",
    "render_gate_error",
]


class ErrorBody(BaseModel):
    """What went wrong: a broad ``type``, a stable machine ``code``, a human ``message``."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(
        description="invalid_request_error | api_error | authentication_error | "
        "permission_error | rate_limit_error | payment_required"
    )
    code: str = Field(description="Stable machine-readable code; match on this.")
    message: str = Field(description="Human-readable explanation; may change.")
    param: str | None = Field(default=None, description="The offending field, dotted, if any.")
    request_id: str | None = Field(default=None, description="Also sent as X-Request-Id.")
    detail: list[dict[str, Any]] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Structured reasons, when the error has them (a refused launch's findings).",
    )


class ErrorEnvelope(BaseModel):
    """The body of every non-2xx response."""

    model_config = ConfigDict(frozen=True)

    error: ErrorBody


class ApiError(Exception):
    """An error meant for the client; rendered as the envelope with ``status``."""

    status = 500
    type = "api_error"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        detail: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.detail = detail
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}


class InvalidRequest(ApiError):
    """The request itself is wrong (body, parameters); retrying it unchanged will fail again."""

    status = 400
    type = "invalid_request_error"


class RequestTooLarge(InvalidRequest):
    """The body exceeds the size limit."""

    status = 413


class NotFound(ApiError):
    """No route (or resource) at this path."""

    status = 404
    type = "invalid_request_error"


class MethodNotAllowed(ApiError):
    """The path exists but not for this method."""

    status = 405
    type = "invalid_request_error"


class Unauthorized(ApiError):
    """No credentials, or credentials that do not check out."""

    status = 401
    type = "authentication_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, headers={"WWW-Authenticate": 'Bearer realm="bavlio"'})


class InsufficientCredits(ApiError):
    """The account's available credits do not cover the operation."""

    status = 402
    type = "payment_required"


class Forbidden(ApiError):
    """Authenticated, but this key, plan or role may not do this."""

    status = 403
    type = "permission_error"


class Conflict(ApiError):
    """The request conflicts with the resource's state or a request in flight."""

    status = 409
    type = "invalid_request_error"


class Unprocessable(ApiError):
    """Well-formed, but refused (e.g. an Idempotency-Key reused with another body)."""

    status = 422
    type = "invalid_request_error"


class RateLimited(ApiError):
    """Too many requests in the current window; ``Retry-After`` says when to come back."""

    status = 429
    type = "rate_limit_error"


class ServiceUnavailable(ApiError):
    """A dependency is down; retry later."""

    status = 503


def database_unavailable() -> ServiceUnavailable:
    """What a caller sees when the database cannot run a statement (server.db.hotpg's
    DatabaseUnavailable), over REST and MCP alike."""
    return ServiceUnavailable(
        "database_unavailable", "The database is unreachable.", headers={"Retry-After": "1"}
    )


def request_id_of(scope: Any) -> str | None:
    """The request id the request-id middleware stored in the ASGI scope, if any."""
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


_GATE_TYPES = {402: "payment_required", 429: "rate_limit_error"}
_NOT_CODE = re.compile(r"[^a-z0-9_]+")  # x402's own reasons include "Payment required"


def render_gate_error(
    scope: Mapping[str, Any],
    status: int,
    code: str,
    message: str,
    x402_body: Mapping[str, Any] | None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The payment gate's refusals in this envelope (x402gw's ``render_error`` hook).

    A 402 challenge keeps the x402 v1 body as it is (``x402Version``, ``accepts`` and ``error``
    as a string, which v1 clients parse) and carries the envelope's fields beside them.
    """
    kind = _GATE_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    machine = _NOT_CODE.sub("_", code.lower()).strip("_") or "payment_error"
    error = ErrorBody(
        type=kind, code=machine, message=message or code, request_id=request_id_of(scope)
    ).model_dump(mode="json")
    if x402_body is None:
        body: dict[str, Any] = {"error": error}
    else:
        body = {**error, **x402_body}
    return [], json.dumps(body, separators=(",", ":")).encode()


def error_response(exc: ApiError, request: Request | None = None) -> JSONResponse:
    """Render an :class:`ApiError` as the envelope, with the request id in body and header."""
    request_id = request_id_of(request.scope) if request is not None else None
    body = ErrorEnvelope(
        error=ErrorBody(
            type=exc.type,
            code=exc.code,
            message=exc.message,
            param=exc.param,
            request_id=request_id,
            detail=exc.detail,
        )
    )
    headers = dict(exc.headers)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return JSONResponse(body.model_dump(mode="json"), status_code=exc.status, headers=headers)
