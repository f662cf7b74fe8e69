"""The sender-profiles group: who campaigns write as. At most five profiles per user, each with
free-form ``sender_data`` (any JSON object, bounded), one default at most, and named prompts."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    RootModel,
    StringConstraints,
    field_validator,
)
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.jsontypes import NONBLANK, NUL_FREE, never_null, not_null, nul_free
from server.resources._common import json_response, list_response, path_id
from server.senders.store import (
    MAX_PROFILES,
    MAX_PROMPTS,
    Profile,
    ProfileLimitReached,
    Prompt,
    PromptExists,
    PromptLimitReached,
    SenderStore,
)

__all__ = [
    "CreatePrompt",
    "CreateSenderProfile",
    "DefaultSenderProfile",
    "PromptList",
    "PromptView",
    "SenderProfileList",
    "SenderProfileView",
    "UpdatePrompt",
    "UpdateSenderProfile",
    "create",
    "create_prompt",
    "default",
    "delete",
    "delete_prompt",
    "get",
    "get_prompt",
    "list_profiles",
    "list_prompts",
    "search",
    "update",
    "update_prompt",
]

MAX_SENDER_DATA = 64 * 1024
"""Bytes of ``sender_data`` as compact JSON."""
MAX_DEPTH = 8
"""Nesting levels of ``sender_data`` (the object itself is level 1)."""
MAX_PROMPT = 20_000
PROMPT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PROMPT_NAME = re.compile(PROMPT_NAME)

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NONBLANK), NUL_FREE]
SenderData = dict[str, JsonValue]


def _depth(value: object) -> int:
    """Nesting depth, iteratively (no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def _bounded(value: SenderData | None) -> SenderData | None:
    if value is None:
        return None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"at most {MAX_DEPTH} levels of nesting")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SENDER_DATA:
        raise ValueError(f"at most {MAX_SENDER_DATA} bytes as JSON")
    return value


class CreateSenderProfile(BaseModel):
    """A profile: a name and any ``sender_data`` fields (full_name, company, role, ...)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    sender_data: SenderData = Field(
        default_factory=dict, description="Any JSON object (64 KiB, 8 levels at most)."
    )
    is_default: bool = Field(default=False, description="Make it the default (clears the old).")

    _data = field_validator("sender_data")(_bounded)


class UpdateSenderProfile(BaseModel):
    """Fields to change; omitted ones stay. ``sender_data`` replaces the old object whole."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra=never_null("name", "sender_data", "is_default"),
    )

    name: Name | None = None
    sender_data: SenderData | None = None
    is_default: bool | None = None

    _data = field_validator("sender_data")(_bounded)
    _present = field_validator("name", "sender_data", "is_default", mode="before")(not_null)


class SenderProfileView(BaseModel):
    """A sender profile."""

    id: str
    object: str = "sender_profile"
    name: str
    sender_data: dict[str, Any]
    is_default: bool
    created: float
    updated: float

    @classmethod
    def of(cls, profile: Profile) -> SenderProfileView:
        """From a stored profile."""
        return cls(
            id=profile.id,
            name=profile.name,
            sender_data=profile.sender_data,
            is_default=profile.is_default,
            created=profile.created_at,
            updated=profile.updated_at,
        )


class DefaultSenderProfile(RootModel[SenderProfileView | None]):
    """The default profile, or null when none is set."""


class SenderProfileList(BaseModel):
    """A page of profiles, newest first."""

    data: list[SenderProfileView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


PromptName = Annotated[str, StringConstraints(pattern=PROMPT_NAME)]
PromptText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_PROMPT, pattern=NONBLANK), NUL_FREE
]


class CreatePrompt(BaseModel):
    """A named prompt: letters, digits, ``_``, ``.``, ``-`` (64 at most) and its text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: PromptName
    content: PromptText


class UpdatePrompt(BaseModel):
    """The prompt's new text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    content: PromptText


class PromptView(BaseModel):
    """A named prompt of a profile."""

    object: str = "prompt"
    profile_id: str
    name: str
    content: str
    created: float
    updated: float

    @classmethod
    def of(cls, profile_id: str, prompt: Prompt) -> PromptView:
        """From a stored prompt."""
        return cls(
            profile_id=profile_id,
            name=prompt.name,
            content=prompt.content,
            created=prompt.created_at,
            updated=prompt.updated_at,
        )


class PromptList(BaseModel):
    """A profile's prompts by name (20 at most: one page)."""

    data: list[PromptView]


def _store(ctx: KeyedContext) -> SenderStore:
    return SenderStore(ctx.services.db.engine)


async def _owned(request: Request, ctx: KeyedContext) -> Profile:
    profile_id = path_id(request, "profile_id", "spf", "sender_profile")
    profile = await _store(ctx).get(ctx.user_id, profile_id)
    if profile is None:
        raise NotFound("sender_profile_not_found", f"No sender profile {profile_id!r}.")
    return profile


async def create(request: Request, ctx: KeyedContext) -> Response:
    """Create a sender profile (at most five per user: the sixth is a 409)."""
    body = await read_json(request, CreateSenderProfile)
    try:
        profile = await _store(ctx).create(
            ctx.user_id,
            name=body.name.strip(),
            sender_data=body.sender_data,
            is_default=body.is_default,
        )
    except ProfileLimitReached:
        raise Conflict(
            "sender_profile_limit_reached",
            f"At most {MAX_PROFILES} sender profiles; delete one first.",
        ) from None
    return json_response(SenderProfileView.of(profile), status_code=201)


async def list_profiles(request: Request, ctx: KeyedContext) -> Response:
    """The user's profiles, newest first (``limit``, ``offset`` or ``cursor``)."""
    page = page_request(request.query_params)
    rows = await _store(ctx).list(
        ctx.user_id, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(rows, page, SenderProfileView.of, lambda p: p.id)


async def search(request: Request, ctx: KeyedContext) -> Response:
    """Profiles whose name contains ``query`` (any case; all of them without one)."""
    page = page_request(request.query_params)
    query = request.query_params.get("query") or request.query_params.get("q")
    query = nul_free(query) if query is not None else None
    if query is not None and len(query) > 100:
        raise InvalidRequest(
            "parameter_invalid", "Invalid query: at most 100 characters.", param="query"
        )
    rows = await _store(ctx).list(
        ctx.user_id, search=query, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(rows, page, SenderProfileView.of, lambda p: p.id)


async def default(request: Request, ctx: KeyedContext) -> Response:
    """The default profile, or null when none is set."""
    profile = await _store(ctx).default(ctx.user_id)
    return json_response(
        DefaultSenderProfile(SenderProfileView.of(profile) if profile is not None else None)
    )


async def get(request: Request, ctx: KeyedContext) -> Response:
    """One of the user's profiles."""
    return json_response(SenderProfileView.of(await _owned(request, ctx)))


async def update(request: Request, ctx: KeyedContext) -> Response:
    """Change the given fields; ``is_default: true`` moves the default here atomically."""
    profile = await _owned(request, ctx)
    body = await read_json(request, UpdateSenderProfile)
    updated = await _store(ctx).update(
        ctx.user_id,
        profile.id,
        name=body.name.strip() if body.name is not None else None,
        sender_data=body.sender_data,
        is_default=body.is_default,
    )
    if updated is None:
        raise NotFound("sender_profile_not_found", f"No sender profile {profile.id!r}.")
    return json_response(SenderProfileView.of(updated))


async def delete(request: Request, ctx: KeyedContext) -> Response:
    """Delete a profile and its prompts (204)."""
    profile = await _owned(request, ctx)
    if not await _store(ctx).delete(ctx.user_id, profile.id):
        raise NotFound("sender_profile_not_found", f"No sender profile {profile.id!r}.")
    return Response(status_code=204)


def _prompt_name(request: Request) -> str:
    name = str(request.path_params.get("name", ""))
    if not _PROMPT_NAME.match(name):
        raise NotFound("prompt_not_found", f"No prompt {name[:80]!r}.")
    return name


async def list_prompts(request: Request, ctx: KeyedContext) -> Response:
    """The profile's named prompts, by name."""
    profile = await _owned(request, ctx)
    prompts = await _store(ctx).prompts(profile.id)
    return json_response(PromptList(data=[PromptView.of(profile.id, p) for p in prompts]))


async def create_prompt(request: Request, ctx: KeyedContext) -> Response:
    """Add a named prompt (20 per profile; a taken name is a 409)."""
    profile = await _owned(request, ctx)
    body = await read_json(request, CreatePrompt)
    try:
        prompt = await _store(ctx).create_prompt(ctx.user_id, profile.id, body.name, body.content)
    except PromptExists:
        raise Conflict(
            "prompt_exists", f"The profile already has a prompt {body.name!r}."
        ) from None
    except PromptLimitReached:
        raise Conflict(
            "prompt_limit_reached", f"At most {MAX_PROMPTS} prompts per profile."
        ) from None
    if prompt is None:
        raise NotFound("sender_profile_not_found", f"No sender profile {profile.id!r}.")
    return json_response(PromptView.of(profile.id, prompt), status_code=201)


async def get_prompt(request: Request, ctx: KeyedContext) -> Response:
    """One named prompt."""
    profile = await _owned(request, ctx)
    name = _prompt_name(request)
    prompt = await _store(ctx).prompt(profile.id, name)
    if prompt is None:
        raise NotFound("prompt_not_found", f"No prompt {name!r}.")
    return json_response(PromptView.of(profile.id, prompt))


async def update_prompt(request: Request, ctx: KeyedContext) -> Response:
    """Replace a named prompt's text."""
    profile = await _owned(request, ctx)
    name = _prompt_name(request)
    body = await read_json(request, UpdatePrompt)
    prompt = await _store(ctx).update_prompt(profile.id, name, body.content)
    if prompt is None:
        raise NotFound("prompt_not_found", f"No prompt {name!r}.")
    return json_response(PromptView.of(profile.id, prompt))


async def delete_prompt(request: Request, ctx: KeyedContext) -> Response:
    """Delete a named prompt (204)."""
    profile = await _owned(request, ctx)
    name = _prompt_name(request)
    if not await _store(ctx).delete_prompt(profile.id, name):
        raise NotFound("prompt_not_found", f"No prompt {name!r}.")
    return Response(status_code=204)
