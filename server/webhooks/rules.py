"""Delivery rules (pure): the state table, the retry schedule, and endpoint health.

A delivery is ``pending`` until a dispatcher claims it (``delivering``, under a lease), then
``delivered`` on a 2xx, back to ``pending`` with a later ``next_attempt_at`` on anything else,
or ``failed`` once :data:`MAX_ATTEMPTS` attempts failed. A dispatcher that dies mid-attempt
leaves ``delivering`` with an expired lease, which is claimed again: delivery is at least once,
and receivers deduplicate by ``webhook-id`` (the same for every attempt of one delivery).

An endpoint whose last :data:`DISABLE_AFTER` deliveries all failed for good is disabled; a
success resets the count.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "DISABLE_AFTER",
    "MAX_ATTEMPTS",
    "RETRY_DELAYS",
    "DeliveryState",
    "after_attempt",
    "endpoint_after",
    "is_success",
]


class DeliveryState(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


RETRY_DELAYS: Final = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Seconds before attempt 2, 3, ... (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 h)."""
MAX_ATTEMPTS: Final = len(RETRY_DELAYS) + 1
DISABLE_AFTER: Final = 5
"""Consecutive deliveries that failed every attempt before their endpoint is disabled."""


def is_success(status: int | None) -> bool:
    """Whether an HTTP status (None: no response) counts as delivered."""
    return status is not None and 200 <= status < 300


def after_attempt(attempts: int, ok: bool, now: float) -> tuple[DeliveryState, float | None]:
    """The state after attempt number ``attempts`` (1-based), and when to try again."""
    if attempts < 1:
        raise ValueError("attempts counts from 1")
    if ok:
        return DeliveryState.DELIVERED, None
    if attempts >= MAX_ATTEMPTS:
        return DeliveryState.FAILED, None
    return DeliveryState.PENDING, now + RETRY_DELAYS[attempts - 1]


def endpoint_after(consecutive_failures: int, state: DeliveryState) -> tuple[int, bool]:
    """The endpoint's consecutive-failure count after a delivery reached ``state``, and
    whether the endpoint is to be disabled now."""
    if state is DeliveryState.DELIVERED:
        return 0, False
    if state is DeliveryState.FAILED:
        count = consecutive_failures + 1
        return count, count >= DISABLE_AFTER
    return consecutive_failures, False
