"""The webhooks group: endpoints (the signing secret shown once), deliveries, a test event,
secret rotation, and the seed's BaviMail ``re-register`` (revive dead endpoints)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.resources._common import json_response, list_response, path_id
from server.webhooks.destination import DestinationError, parse_url
from server.webhooks.events import EVENT_TYPES, TEST_EVENT
from server.webhooks.store import (
    MAX_ENDPOINTS,
    DeliveryRecord,
    EndpointLimitReached,
    EndpointRecord,
    WebhookStore,
)

__all__ = [
    "CreateWebhook",
    "DeliveryList",
    "DeliveryView",
    "ReRegistered",
    "SecretRotated",
    "TestQueued",
    "UpdateWebhook",
    "WebhookCreated",
    "WebhookList",
    "WebhookView",
    "create",
    "deliveries",
    "get",
    "list_webhooks",
    "re_register",
    "remove",
    "rotate_secret",
    "send_test",
    "update",
]

EventType = Annotated[
    str,
    Field(max_length=64),
    WithJsonSchema({"type": "string", "enum": sorted(EVENT_TYPES)}),
]


def _known_types(values: list[str]) -> list[str]:
    unknown = [value for value in values if value not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}")
    return list(dict.fromkeys(values))


class CreateWebhook(BaseModel):
    """A URL (https, public) and the event types it takes (empty: every type)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=8, max_length=2048)
    description: str = Field(default="", max_length=500)
    event_types: list[EventType] = Field(default_factory=list, max_length=len(EVENT_TYPES))

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return _known_types(value)


class UpdateWebhook(BaseModel):
    """The fields to change; ``enabled: true`` also clears a disabled endpoint's failures."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str | None = Field(default=None, min_length=8, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[EventType] | None = Field(default=None, max_length=len(EVENT_TYPES))
    enabled: bool | None = None

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _known_types(value)


class WebhookView(BaseModel):
    """An endpoint as lists show it (never its secret)."""

    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_at: float | None
    disabled_reason: str | None
    consecutive_failures: int
    last_success_at: float | None
    last_failure_at: float | None
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, record: EndpointRecord) -> WebhookView:
        """From a store record."""
        return cls(
            id=record.id,
            url=record.url,
            description=record.description,
            event_types=list(record.event_types),
            enabled=record.enabled,
            disabled_at=record.disabled_at,
            disabled_reason=record.disabled_reason,
            consecutive_failures=record.consecutive_failures,
            last_success_at=record.last_success_at,
            last_failure_at=record.last_failure_at,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class WebhookCreated(WebhookView):
    """The new endpoint and its signing secret (``whsec_…``), shown this once."""

    secret: str


class WebhookList(BaseModel):
    """A page of the user's endpoints, newest first."""

    data: list[WebhookView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class SecretRotated(BaseModel):
    """The endpoint's new signing secret (the old one no longer signs)."""

    id: str
    secret: str


class TestQueued(BaseModel):
    """A test event queued for the endpoint (0 when the endpoint is disabled)."""

    id: str
    event_type: str
    queued: int


class DeliveryView(BaseModel):
    """One delivery: its event, state and last attempt (our error code, never the body)."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None

    @classmethod
    def of(cls, record: DeliveryRecord) -> DeliveryView:
        """From a store record."""
        return cls(**record.__dict__)


class DeliveryList(BaseModel):
    """A page of an endpoint's deliveries, newest first."""

    data: list[DeliveryView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class ReRegisteredEndpoint(WebhookView):
    """An endpoint and what re-register did to it."""

    status: Literal["already_active", "reactivated"]


class ReRegistered(BaseModel):
    """Every endpoint of the caller after reviving the dead ones."""

    data: list[ReRegisteredEndpoint]


def _store(ctx: KeyedContext) -> WebhookStore:
    return ctx.services.webhooks


def _checked_url(ctx: KeyedContext, url: str) -> str:
    settings = ctx.services.settings
    try:
        parse_url(
            url,
            allow_http=settings.webhooks_allow_http,
            allow_private=settings.webhooks_allow_private,
        )
    except DestinationError as exc:
        raise InvalidRequest(exc.code, exc.message, param="url") from None
    return url


def _endpoint_id(request: Request) -> str:
    return path_id(request, "webhook_id", "whk", "webhook")


async def create(request: Request, ctx: KeyedContext) -> Response:
    """Register an endpoint; the response is the only time its secret is shown."""
    body = await read_json(request, CreateWebhook)
    url = _checked_url(ctx, body.url)
    try:
        record, secret = await _store(ctx).create(
            ctx.user_id, url=url, description=body.description, event_types=body.event_types
        )
    except EndpointLimitReached:
        raise Conflict(
            "too_many_webhooks", f"At most {MAX_ENDPOINTS} webhooks; delete one first."
        ) from None
    created = WebhookCreated(**WebhookView.of(record).model_dump(), secret=secret)
    return json_response(created, status_code=201)


async def list_webhooks(request: Request, ctx: KeyedContext) -> Response:
    """The user's endpoints, newest first."""
    page = page_request(request.query_params)
    records = await _store(ctx).list_endpoints(
        ctx.user_id, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(records, page, WebhookView.of, lambda r: r.id)


async def _owned(request: Request, ctx: KeyedContext) -> EndpointRecord:
    endpoint_id = _endpoint_id(request)
    record = await _store(ctx).get(ctx.user_id, endpoint_id)
    if record is None:
        raise NotFound("webhook_not_found", f"No webhook {endpoint_id!r}.")
    return record


async def get(request: Request, ctx: KeyedContext) -> Response:
    """One endpoint."""
    return json_response(WebhookView.of(await _owned(request, ctx)))


async def update(request: Request, ctx: KeyedContext) -> Response:
    """Change the URL, description, event types, or enable/disable the endpoint."""
    endpoint_id = _endpoint_id(request)
    body = await read_json(request, UpdateWebhook)
    changes = body.model_dump(exclude_none=True)
    if "url" in changes:
        _checked_url(ctx, changes["url"])
    record = await _store(ctx).update(ctx.user_id, endpoint_id, changes)
    if record is None:
        raise NotFound("webhook_not_found", f"No webhook {endpoint_id!r}.")
    return json_response(WebhookView.of(record))


async def remove(request: Request, ctx: KeyedContext) -> Response:
    """Delete the endpoint and its pending deliveries."""
    record = await _owned(request, ctx)
    await _store(ctx).delete(ctx.user_id, record.id)
    return json_response(WebhookView.of(record))


async def rotate_secret(request: Request, ctx: KeyedContext) -> Response:
    """A new signing secret; deliveries from now on are signed with it."""
    endpoint_id = _endpoint_id(request)
    secret = await _store(ctx).rotate_secret(ctx.user_id, endpoint_id)
    if secret is None:
        raise NotFound("webhook_not_found", f"No webhook {endpoint_id!r}.")
    return json_response(SecretRotated(id=endpoint_id, secret=secret))


async def send_test(request: Request, ctx: KeyedContext) -> Response:
    """Queue a ``webhook.test`` event for this endpoint only."""
    record = await _owned(request, ctx)
    queued = await _store(ctx).emit(
        ctx.user_id, TEST_EVENT, {"webhook_id": record.id}, only=record.id
    )
    return json_response(
        TestQueued(id=record.id, event_type=TEST_EVENT, queued=queued), status_code=202
    )


async def deliveries(request: Request, ctx: KeyedContext) -> Response:
    """The endpoint's deliveries, newest first."""
    record = await _owned(request, ctx)
    page = page_request(request.query_params)
    rows = await _store(ctx).deliveries(
        ctx.user_id, record.id, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(rows, page, DeliveryView.of, lambda r: r.id)


async def re_register(request: Request, ctx: KeyedContext) -> Response:
    """Revive the caller's dead endpoints (disabled or failing); idempotent: healthy ones are
    returned as ``already_active``."""
    revived = await _store(ctx).revive(ctx.user_id)
    data = [
        ReRegisteredEndpoint(
            **WebhookView.of(record).model_dump(),
            status="reactivated" if changed else "already_active",
        )
        for record, changed in revived
    ]
    return json_response(ReRegistered(data=data))
