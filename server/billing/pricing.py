"""The one pricing table: each priced operation has a USD price (x402, per call) and a credit
price (keyed API, per unit). Routes name a price key; nothing else holds a price.

One key sells credits instead of spending them: ``credits.purchase`` (``POST
/api/v1/credits/purchase``, paid with x402). Its ``usd`` is what one purchase costs and its
``credits`` how many credits one settled purchase adds to the caller's account (a pack, unit
``purchase``): $1.00 for 100 credits by default.

Overrides come from settings (``BAVLIO_PRICES`` as JSON, or ``[prices]`` in the TOML file), e.g.
``{"email.verify": {"usd": "0.006", "credits": 2}}``; unknown keys are refused at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_PRICES",
    "DISCOUNT_TIERS",
    "PURCHASE_KEY",
    "Charge",
    "ChargedKey",
    "Price",
    "PriceKey",
    "PriceOverride",
    "UsdPrice",
    "credits_for",
    "price_table",
]


def _usd(value: Decimal) -> Decimal:
    if value <= 0 or value > 1000:
        raise ValueError("must be a positive USD amount up to 1000")
    if value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValueError("must have at most 6 decimal places")
    return value


UsdPrice = Annotated[Decimal, AfterValidator(_usd)]


@dataclass(frozen=True)
class Price:
    """What one unit of an operation costs on each channel."""

    usd: Decimal
    credits: int
    unit: str = "call"


ChargedKey = Literal[
    "email.validate",
    "email.verify",
    "email.find",
    "email.bulk_find",
    "email.dataset_verify",
    "linkedin.find_url",
    "leads.batch",
    "prospects.search",
]
"""The keys whose ``credits`` are spent per unit (what estimates and charges price)."""

PURCHASE_KEY: Literal["credits.purchase"] = "credits.purchase"
"""The key whose ``credits`` are *added* per purchase (a pack bought with x402)."""

PriceKey = Literal[ChargedKey, "credits.purchase"]
"""Every key of the table (overrides change prices, never add keys)."""

DEFAULT_PRICES: Mapping[str, Price] = {
    "email.validate": Price(Decimal("0.003"), 1),
    "email.verify": Price(Decimal("0.005"), 1),
    "email.find": Price(Decimal("0.010"), 3),
    "email.bulk_find": Price(Decimal("0.010"), 3, "row"),
    "email.dataset_verify": Price(Decimal("0.005"), 1, "row"),
    "linkedin.find_url": Price(Decimal("0.008"), 3),
    "leads.batch": Price(Decimal("0.008"), 3, "name"),
    "prospects.search": Price(Decimal("0.012"), 4),
    "credits.purchase": Price(Decimal("1.00"), 100, "purchase"),
}


class PriceOverride(BaseModel):
    """A partial change to one price key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd: UsdPrice | None = None
    credits: int | None = Field(default=None, ge=0, le=1_000_000)


def price_table(overrides: Mapping[str, PriceOverride]) -> dict[str, Price]:
    """The defaults with ``overrides`` applied; ValueError naming an unknown key, or a purchase
    that would add no credits."""
    table = dict(DEFAULT_PRICES)
    for key, override in overrides.items():
        if key not in table:
            raise ValueError(f"unknown price key {key!r} (known: {', '.join(sorted(table))})")
        current = table[key]
        table[key] = replace(
            current,
            usd=override.usd if override.usd is not None else current.usd,
            credits=override.credits if override.credits is not None else current.credits,
        )
    if table[PURCHASE_KEY].credits < 1:
        raise ValueError(f"{PURCHASE_KEY} must add at least 1 credit per purchase")
    return table


DISCOUNT_TIERS: tuple[tuple[int, int], ...] = ((10_000, 20), (1_000, 10), (100, 5))
"""(minimum units in one request, percent off), largest first: what estimates quote and what
batch charges apply."""


@dataclass(frozen=True)
class Charge:
    """Credits for ``count`` units of one price: before and after the volume discount."""

    subtotal: int
    discount_percent: int
    total: int


def credits_for(price: Price, count: int) -> Charge:
    """The credits ``count`` units cost in one request (volume discount applied, rounded up)."""
    subtotal = price.credits * count
    discount = next((pct for least, pct in DISCOUNT_TIERS if count >= least), 0)
    return Charge(subtotal, discount, subtotal - subtotal * discount // 100)


assert set(get_args(PriceKey)) == set(DEFAULT_PRICES), "PriceKey and DEFAULT_PRICES disagree"
