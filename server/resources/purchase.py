"""Buying credits with a wallet: ``POST /api/v1/credits/purchase``, paid with x402.

The keyed entry (server.http.wallet) authenticates the caller and passes the request through the
payment gate; this handler runs only once the gate has settled the payment (upfront), and books
the pack with the reference of the settled authorization. The gate keeps the response and
replays it to a repeat of the same payment, so one payment books once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from server.billing.credits import UnknownAccount
from server.billing.pricing import PURCHASE_KEY
from server.billing.purchases import Binding, book
from server.errors import ApiError, ServiceUnavailable
from server.resources._common import json_response
from server.services import services

__all__ = ["SCOPE_KEY", "Purchase", "PurchaseContext", "PurchaseRequest", "purchase_settled"]

SCOPE_KEY = "bavlio.purchase"
"""Where the keyed entry leaves the :class:`PurchaseContext` in the ASGI scope."""

log = logging.getLogger("bavlio.purchases")


@dataclass(frozen=True)
class PurchaseContext:
    """What the keyed entry established before the gate: who pays for what, and the ledger
    reference of the payment sent (None when no readable payment was sent)."""

    binding: Binding
    reference: str | None = None
    payer: str | None = None
    nonce: str | None = None


class PurchaseRequest(BaseModel):
    """An empty object (or no body): one purchase buys one pack of the ``credits.purchase``
    price."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Purchase(BaseModel):
    """The credits one settled payment added; the receipt is the ``PAYMENT-RESPONSE`` header."""

    credits_added: int = Field(description="Credits this payment added (one pack).")
    total_credits: int = Field(description="The account's credits after the purchase.")
    available_credits: int
    price_usd: str = Field(description="What the purchase cost (the credits.purchase price).")
    payer: str = Field(description="The wallet that paid.")
    reference: str = Field(
        description="The ledger reference of this payment (network, token, payer, nonce)."
    )
    booked_now: bool = Field(
        description="False when this payment had been booked already (a recovery booked it)."
    )


async def purchase_settled(request: Request) -> Response:
    """Buy one pack of credits (``credits.purchase``) with an x402 payment, settled before the
    credits are booked; a repeat of the same payment replays this answer and books nothing."""
    ctx = request.scope.get(SCOPE_KEY)
    if not isinstance(ctx, PurchaseContext) or ctx.reference is None or ctx.payer is None:
        # Only the keyed entry reaches this handler, with a payment the gate has settled.
        raise ApiError("purchase_unbound", "The purchase has no account or payment.")
    svc = services(request)
    store = svc.keyed.credits
    try:
        booked = await book(store, ctx.binding, ctx.reference)
        position = await store.balance(ctx.binding.user_id)
    except (SQLAlchemyError, OSError, UnknownAccount) as exc:
        log.error("bavlio: purchase %s settled, not booked: %s", ctx.reference, exc)
        raise ServiceUnavailable(
            "purchase_not_booked",
            "The payment settled but the credits could not be booked yet; repeat the same "
            "payment (or wait for recovery) and they are booked once.",
        ) from None
    price = svc.settings.price_table()[PURCHASE_KEY]
    return json_response(
        Purchase(
            credits_added=ctx.binding.credits,
            total_credits=position.balance,
            available_credits=position.available,
            price_usd=str(price.usd),
            payer=ctx.payer,
            reference=ctx.reference,
            booked_now=booked,
        )
    )
