"""The authentication and users groups: who am I, my plan's quota, my usage."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from server.http.keyed import KeyedContext
from server.resources._common import json_response

__all__ = ["Me", "QuotaStatus", "Usage", "me", "quota_status", "usage", "verify_token"]

_MONTH = 30 * 24 * 3600


class KeyInfo(BaseModel):
    """The key a request came with."""

    id: str
    prefix: str
    scopes: list[str]


class Me(BaseModel):
    """The caller: user, plan, how it authenticated."""

    user_id: str
    email: str | None
    role: str
    plan: str
    authenticated: bool = True
    auth_method: Literal["api_key", "jwt"]
    api_key: KeyInfo | None
    created_at: float
    app_metadata: dict[str, Any] = Field(default_factory=dict)
    user_metadata: dict[str, Any] = Field(default_factory=dict)


def _me(ctx: KeyedContext) -> Me:
    principal = ctx.principal
    key = principal.key
    return Me(
        user_id=principal.user.id,
        email=principal.user.email,
        role="authenticated",
        plan=principal.plan_name,
        auth_method=principal.via,
        api_key=KeyInfo(id=key.id, prefix=key.prefix, scopes=list(key.scopes)) if key else None,
        created_at=principal.user.created_at,
        app_metadata={"plan": principal.plan_name},
    )


async def me(request: Request, ctx: KeyedContext) -> Response:
    """The authenticated user (an alias of /auth/verify)."""
    return json_response(_me(ctx))


async def verify_token(request: Request, ctx: KeyedContext) -> Response:
    """Check the credentials and return the user they belong to."""
    return json_response(_me(ctx))


class QuotaStatus(BaseModel):
    """The plan's limits against this month's use."""

    plan: str
    rate_limit: str
    credits_available: int
    credits_held: int
    credits_used_30d: int
    denied_operations: list[str]
    warning: Literal["ok", "low_credits", "no_credits"]
    recommendation: str | None


async def quota_status(request: Request, ctx: KeyedContext) -> Response:
    """Credits, rate limit and what the plan does not include, with a recommendation."""
    credits = ctx.keyed.credits
    balance = await credits.balance(ctx.user_id)
    used = await credits.spent_since(ctx.user_id, time.time() - _MONTH)
    plan = ctx.principal.plan
    warning: Literal["ok", "low_credits", "no_credits"] = (
        "no_credits"
        if balance.available <= 0
        else "low_credits"
        if balance.available < 10
        else "ok"
    )
    advice = None
    if plan.denied:
        advice = "Upgrade to a paid plan to use email finding and verification."
    elif warning != "ok":
        advice = "Top up credits (POST /api/v1/credits/purchase with an x402 payment)."
    return json_response(
        QuotaStatus(
            plan=ctx.principal.plan_name,
            rate_limit=plan.rate_limit,
            credits_available=balance.available,
            credits_held=balance.held,
            credits_used_30d=used,
            denied_operations=sorted(plan.denied),
            warning=warning,
            recommendation=advice,
        )
    )


class Usage(BaseModel):
    """Usage over the last 30 days and in total."""

    plan: str
    period_start: float
    credits_used_period: int
    credits_used_total: int
    credits_granted_total: int
    credits_remaining: int


async def usage(request: Request, ctx: KeyedContext) -> Response:
    """Credits used this period and overall."""
    credits = ctx.keyed.credits
    since = time.time() - _MONTH
    balance = await credits.balance(ctx.user_id)
    return json_response(
        Usage(
            plan=ctx.principal.plan_name,
            period_start=since,
            credits_used_period=await credits.spent_since(ctx.user_id, since),
            credits_used_total=balance.used,
            credits_granted_total=balance.granted,
            credits_remaining=balance.available,
        )
    )
