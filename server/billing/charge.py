"""Charging a keyed call: reserve before the work, capture when it delivered, release when not.

A 4xx or 5xx raised by the work releases the hold (never charge for work not delivered); a
balance short of the price is a 402 before any work starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from server.billing.credits import CreditStore, Hold, InsufficientBalance
from server.billing.pricing import Price, credits_for
from server.errors import InsufficientCredits

__all__ = ["charged"]


@contextlib.asynccontextmanager
async def charged(
    credits: CreditStore,
    user_id: str,
    price_key: str,
    price: Price,
    units: int = 1,
    *,
    reference: str | None = None,
) -> AsyncIterator[Hold | None]:
    """Hold ``units`` of ``price`` for the block; capture on success, release on any exception.

    Yields the hold (None when the price is zero credits).
    """
    amount = credits_for(price, units).total
    if amount == 0:
        yield None
        return
    try:
        hold = await credits.reserve(user_id, amount, operation=price_key, reference=reference)
    except InsufficientBalance as exc:
        raise InsufficientCredits(
            "insufficient_credits",
            f"This costs {amount} credits; {exc.available} available. Top up to continue.",
        ) from None
    try:
        yield hold
    except BaseException:
        # shielded: a cancelled request still returns its hold (else it waits for expiry)
        await asyncio.shield(credits.release(user_id, hold.id))
        raise
    await asyncio.shield(credits.capture(user_id, hold.id))
