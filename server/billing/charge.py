"""Charging a keyed call, two ways; both never charge for work that raised (a 4xx or 5xx).

:func:`charged` reserves before the work, captures when it delivered and releases when not: for
work that takes long or costs much (nothing starts that the balance cannot pay for).
:func:`debited` is for quick synchronous calls: a pre-check read before the work (a short balance
is a 402 before any work, as a rule), then one debit after it. When the balance was spent by
concurrent calls meanwhile, the debit is refused and the answer is a 402 too: that work was done
but its result is not delivered (a result is released only when charged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from server.billing.credits import CreditStore, Hold, InsufficientBalance
from server.billing.pricing import Price, credits_for
from server.errors import InsufficientCredits

__all__ = ["charged", "debited"]


def _refused(amount: int, available: int) -> InsufficientCredits:
    return InsufficientCredits(
        "insufficient_credits",
        f"This costs {amount} credits; {available} available. Top up to continue.",
    )


@contextlib.asynccontextmanager
async def debited(
    credits: CreditStore,
    user_id: str,
    price_key: str,
    price: Price,
    units: int = 1,
    *,
    available: int | None = None,
) -> AsyncIterator[int]:
    """Check the balance covers ``units`` of ``price``, run the block, then debit it once.

    ``available`` is a balance already read for this request (the key lookup reads it), saving
    the pre-check's read. Yields the amount. A 402 before the block when the balance is short; a 402 after it when the
    debit is refused (the block's result must then not be sent); nothing is charged when the block
    raises.
    """
    amount = credits_for(price, units).total
    if amount == 0:
        yield 0
        return
    if available is None:
        available = await credits.available(user_id)
    if available < amount:
        raise _refused(amount, available)
    yield amount
    try:
        # a request cancelled while its debit is in flight still books it whole: the debit
        # shields its own pooled path, and its inline path never yields
        await credits.debit(user_id, amount, operation=price_key)
    except InsufficientBalance as exc:
        raise _refused(amount, exc.available) from None


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
        raise _refused(amount, exc.available) from None
    try:
        yield hold
    except BaseException:
        # shielded: a cancelled request still returns its hold (else it waits for expiry)
        await asyncio.shield(credits.release(user_id, hold.id))
        raise
    await asyncio.shield(credits.capture(user_id, hold.id))
