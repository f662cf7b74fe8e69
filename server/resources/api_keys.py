"""The api-keys group: create (session token only; the key is shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.auth.scopes import ALL, normalise, scope_pattern
from server.auth.store import MAX_KEYS, KeyLimitReached, KeyRecord
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.resources._common import json_response, list_response, path_id

__all__ = [
    "ApiKeyCreated",
    "ApiKeyList",
    "ApiKeyView",
    "CreateApiKey",
    "create",
    "list_keys",
    "revoke",
]


class CreateApiKey(BaseModel):
    """A name and, for a restricted key, its scopes (default: everything)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(default="API key", min_length=1, max_length=100)
    scopes: list[Annotated[str, Field(pattern=scope_pattern(), max_length=64)]] = Field(
        default_factory=lambda: [ALL],
        min_length=1,
        max_length=50,
        description="`*`, or `<group>:read` / `<group>:write` per resource group.",
    )


class ApiKeyView(BaseModel):
    """A key as lists show it: never the key itself."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    active: bool

    @classmethod
    def of(cls, record: KeyRecord) -> ApiKeyView:
        """From a store record."""
        return cls(
            id=record.id,
            name=record.name,
            prefix=record.prefix,
            scopes=list(record.scopes),
            created_at=record.created_at,
            last_used_at=record.last_used_at,
            revoked_at=record.revoked_at,
            active=record.revoked_at is None,
        )


class ApiKeyCreated(ApiKeyView):
    """The new key, in the clear this once: store it now."""

    key: str


class ApiKeyList(BaseModel):
    """A page of the user's keys, newest first."""

    data: list[ApiKeyView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


async def create(request: Request, ctx: KeyedContext) -> Response:
    """Create an API key; the response is the only time the raw key is shown."""
    body = await read_json(request, CreateApiKey)
    try:
        scopes = normalise(body.scopes)
    except ValueError as exc:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid scopes: {exc}.", param="scopes"
        ) from None
    try:
        raw, record = await ctx.keyed.accounts.create_key(ctx.user_id, body.name, scopes)
    except KeyLimitReached:
        raise Conflict(
            "too_many_api_keys", f"At most {MAX_KEYS} active keys; revoke one first."
        ) from None
    view = ApiKeyView.of(record)
    return json_response(ApiKeyCreated(**view.model_dump(), key=raw), status_code=201)


async def list_keys(request: Request, ctx: KeyedContext) -> Response:
    """The user's keys (active and revoked), newest first; ``cursor``/``offset`` and ``limit``."""
    page = page_request(request.query_params)
    records = await ctx.keyed.accounts.keys(
        ctx.user_id, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(records, page, ApiKeyView.of, lambda r: r.id)


async def revoke(request: Request, ctx: KeyedContext) -> Response:
    """Revoke a key: it fails with 401 from its next request on."""
    key_id = path_id(request, "key_id", "key", "api_key")
    record = await ctx.keyed.accounts.revoke_key(ctx.user_id, key_id)
    if record is None:
        raise NotFound("api_key_not_found", f"No API key {key_id!r}.")
    return json_response(ApiKeyView.of(record))
