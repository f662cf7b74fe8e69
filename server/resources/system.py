"""Public system routes of the keyed API: ``/api/v1/status`` and ``/api/v1/capabilities``."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from server.auth.scopes import GROUPS
from server.resources._common import json_response
from server.services import services

__all__ = ["Capabilities", "Status", "capabilities", "status"]

_STARTED = time.time()


class Status(BaseModel):
    """The API is serving; its version and uptime."""

    status: Literal["ok"] = "ok"
    version: str
    uptime_seconds: float


async def status(request: Request) -> Response:
    """Liveness of the keyed API (served at /api/v1/status and, as the seed lists it,
    /api/v1/api/v1/status)."""
    from server.openapi import api_version

    return json_response(Status(version=api_version(), uptime_seconds=time.time() - _STARTED))


class PriceView(BaseModel):
    """One price key on both channels."""

    usd: str
    credits: int
    unit: str


class PlanView(BaseModel):
    """One plan's limits."""

    rate_limit: str
    signup_credits: int
    denied_operations: list[str]


class Capabilities(BaseModel):
    """What this deployment offers."""

    groups: list[str]
    plans: dict[str, PlanView]
    default_plan: str
    prices: dict[str, PriceView]
    payments: dict[str, str | bool | None]
    smtp_probing: bool
    auth: list[str]


async def capabilities(request: Request) -> Response:
    """Resource groups, plans, prices, payment network and which features are on."""
    svc = services(request)
    settings = svc.settings
    smtp = any(op.smtp for op in request.app.state.operations)
    return json_response(
        Capabilities(
            groups=list(GROUPS),
            plans={
                name: PlanView(
                    rate_limit=plan.rate_limit,
                    signup_credits=plan.signup_credits,
                    denied_operations=sorted(plan.denied),
                )
                for name, plan in settings.plan_table().items()
            },
            default_plan=settings.default_plan,
            prices={
                key: PriceView(usd=str(price.usd), credits=price.credits, unit=price.unit)
                for key, price in settings.price_table().items()
            },
            payments={
                "x402": settings.pay_to is not None,
                "network": settings.network,
                "asset": settings.asset,
                "pay_to": settings.pay_to,
            },
            smtp_probing=smtp,
            auth=["api_key", "jwt"] + (["jwks"] if settings.jwks_url else []),
        )
    )
