"""Credit ledger rules (pure): hold states, their transitions and the balance effect of each.

A charge is two steps, as a card authorisation is: ``reserve`` puts a hold on part of the available
balance (refused when ``balance - held`` is short), then the hold is ``captured`` (the work was
delivered: the amount leaves the balance) or ``released``/``expired`` (nothing is charged). Each
transition is one conditional UPDATE ``WHERE state = <from>``, so a hold settles once however many
workers race on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_AMOUNT",
    "CreditRuleError",
    "Effect",
    "EntryKind",
    "HoldEvent",
    "HoldState",
    "effect",
    "next_state",
    "validate_amount",
]

MAX_AMOUNT = 10**12
"""No single grant, purchase or hold may exceed this many credits."""


class CreditRuleError(ValueError):
    """A transition or amount the rules refuse."""


class HoldState(StrEnum):
    """Where a reservation is."""

    HELD = "held"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


class HoldEvent(StrEnum):
    """What can happen to a reservation."""

    CAPTURE = "capture"
    RELEASE = "release"
    EXPIRE = "expire"


class EntryKind(StrEnum):
    """Append-only ledger entries: money in (grant, purchase, refund) and out (debit)."""

    GRANT = "grant"
    PURCHASE = "purchase"
    DEBIT = "debit"
    REFUND = "refund"


_TABLE: dict[tuple[HoldState, HoldEvent], HoldState] = {
    (HoldState.HELD, HoldEvent.CAPTURE): HoldState.CAPTURED,
    (HoldState.HELD, HoldEvent.RELEASE): HoldState.RELEASED,
    (HoldState.HELD, HoldEvent.EXPIRE): HoldState.EXPIRED,
}


@dataclass(frozen=True)
class Effect:
    """Change to an account row: ``balance += balance_delta``, ``held += held_delta``."""

    balance_delta: int
    held_delta: int


def next_state(state: HoldState, event: HoldEvent) -> HoldState:
    """The state after ``event``; CreditRuleError when the table has no such transition."""
    try:
        return _TABLE[(state, event)]
    except KeyError:
        raise CreditRuleError(f"a {state} hold cannot {event}") from None


def effect(event: HoldEvent, held: int, captured: int = 0) -> Effect:
    """The account change when a hold of ``held`` credits meets ``event``.

    ``captured`` (capture only) may be less than ``held`` (a bulk job that skipped rows): the
    rest returns to the available balance.
    """
    if event is HoldEvent.CAPTURE:
        if not 0 <= captured <= held:
            raise CreditRuleError("cannot capture more than the hold")
        return Effect(balance_delta=-captured, held_delta=-held)
    return Effect(balance_delta=0, held_delta=-held)


def validate_amount(amount: int, *, allow_zero: bool = False) -> int:
    """``amount`` if it is a whole number of credits within bounds; CreditRuleError otherwise."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise CreditRuleError("credits are whole numbers")
    if amount < 0 or (amount == 0 and not allow_zero) or amount > MAX_AMOUNT:
        raise CreditRuleError(f"amount must be between 1 and {MAX_AMOUNT}")
    return amount
