"""The route table: one :class:`Operation` per endpoint, read by the app and by the OpenAPI writer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from server.api import health, x402
from server.errors import ErrorEnvelope
from server.prospects.models import SearchRequest, SearchResponse

__all__ = ["PAID_PREFIX", "Access", "Operation", "QueryParam", "keyed_group", "operations"]

PAID_PREFIX = "/api/x402/v1"
Endpoint = Callable[[Request], Awaitable[Response]]
Access = Literal["public", "x402", "api_key", "jwt"]
"""Who may call: anyone; a wallet paying with x402; an API key or a session token (with scopes);
a session token only (key management: a leaked key cannot mint keys)."""


@dataclass(frozen=True)
class QueryParam:
    """A documented query parameter (the handler validates it)."""

    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Operation:
    """An endpoint with its access, price key and the models that describe it.

    ``x402`` routes live under PAID_PREFIX; ``api_key``/``jwt`` routes run behind the keyed guard
    pipeline (server.http.keyed) and their ``endpoint`` takes ``(request, ctx)``. ``scope`` names
    the resource group a restricted key needs (read for GET, write otherwise). ``smtp`` routes
    probe mail servers: they are served only with an SMTP identity configured.
    """

    method: str
    path: str
    endpoint: Callable[..., Awaitable[Response]]
    operation_id: str
    summary: str
    response_model: type[BaseModel]
    request_model: type[BaseModel] | None = None
    request_body: dict[str, Any] | None = None
    """An OpenAPI request-body ``content`` map for a body that is no JSON model (a CSV upload)."""
    tag: str = "system"
    access: Access = "public"
    scope: str | None = None
    price_key: str | None = None
    status_code: int = 200
    query: tuple[QueryParam, ...] = ()
    path_params: tuple[QueryParam, ...] = ()
    """Schemas of path parameters (default: a plain string)."""
    smtp: bool = False
    request_content: str = "application/json"
    """Media type of the request body (``multipart/form-data`` for file uploads)."""
    responses: dict[int, type[BaseModel]] = field(default_factory=dict)
    deadline: float = 30.0
    """Seconds a paid handler may run before the gate cancels it (504, not charged)."""
    media_types: tuple[str, ...] = ("application/json",)
    """Media types of the success response (others than JSON are documented as files)."""
    wallet: bool = False
    """A keyed operation paid with x402 too (buying credits): the guard authenticates first, then
    the one payment gate settles before ``endpoint`` (a plain ``(request)`` handler) runs."""

    @property
    def paid(self) -> bool:
        """Served under PAID_PREFIX behind the x402 gate."""
        return self.access == "x402"

    @property
    def gated(self) -> bool:
        """Priced by the x402 payment gate: the paid routes and the wallet-paid keyed ones."""
        return self.paid or self.wallet

    @property
    def keyed(self) -> bool:
        """Served behind the keyed guard pipeline."""
        return self.access in ("api_key", "jwt")

    @property
    def full_path(self) -> str:
        """The path as clients call it."""
        return PAID_PREFIX + self.path if self.paid else self.path


def keyed_group(tag: str, scope: str) -> Callable[..., Operation]:
    """The :class:`Operation` maker of one API-key group: what it makes carries ``tag``, API-key
    access and ``scope`` unless the call names its own (the catalog's groups share these)."""

    def op(*args: Any, **options: Any) -> Operation:
        return Operation(*args, **{"tag": tag, "access": "api_key", "scope": scope, **options})

    return op


def operations() -> tuple[Operation, ...]:
    """Every mounted endpoint, in documentation order."""
    from server.resources.catalog import keyed_operations

    return (
        Operation("GET", "/health", health.health, "health", "Liveness", health.HealthResponse),
        Operation(
            "GET", "/api/v1/health", health.health, "health_v1", "Liveness", health.HealthResponse
        ),
        Operation(
            "GET",
            "/api/v1/ready",
            health.ready,
            "ready",
            "Readiness: database, chain RPC and DNS",
            health.ReadyResponse,
            responses={503: health.NotReadyResponse},
        ),
        Operation(
            "POST",
            "/email/validate",
            x402.validate_email,
            "x402_email_validate",
            "DNS-only email deliverability check",
            x402.ValidateResponse,
            x402.ValidateRequest,
            tag="x402",
            access="x402",
            responses={503: ErrorEnvelope},
        ),
        Operation(
            "POST",
            "/email/verify",
            x402.verify_email,
            "x402_email_verify",
            "Email validation plus an SMTP mailbox probe",
            x402.ValidateResponse,
            x402.ValidateRequest,
            tag="x402",
            access="x402",
            deadline=90.0,
            smtp=True,
            responses={503: ErrorEnvelope, 504: ErrorEnvelope},
        ),
        Operation(
            "POST",
            "/email/find",
            x402.find_email,
            "x402_email_find",
            "Find a person's address: generated or given candidates, first the server accepts",
            x402.FindResponse,
            x402.FindRequest,
            tag="x402",
            access="x402",
            deadline=90.0,
            smtp=True,
            responses={503: ErrorEnvelope, 504: ErrorEnvelope},
        ),
        Operation(
            "POST",
            "/linkedin/find-url",
            x402.find_linkedin_url,
            "x402_linkedin_find_url",
            "Ranked LinkedIn profile URLs for a person at a company",
            x402.LinkedInResponse,
            x402.LinkedInRequest,
            tag="x402",
            access="x402",
            deadline=90.0,
            responses={502: ErrorEnvelope, 503: ErrorEnvelope},
        ),
        Operation(
            "POST",
            "/prospects/search",
            x402.prospects_search,
            "x402_prospects_search",
            "Search the prospect pool by tag overlap",
            SearchResponse,
            SearchRequest,
            tag="x402",
            access="x402",
        ),
        *keyed_operations(),
    )
