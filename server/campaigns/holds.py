"""System holds of a campaign (pure): facts in, the list of holds out. A hold stops sending
without touching the user's own status, and is lifted as soon as its cause clears (the facts
are re-read every tick). Codes: ``domain_dns_failing``, ``bounce_rate``, ``daily_cap``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Facts", "Hold", "Thresholds", "evaluate", "merge"]


@dataclass(frozen=True)
class Thresholds:
    """Bounce rate above ``bounce_rate`` holds once at least ``min_sends`` were sent (the
    deployment's come from ``BAVLIO_CAMPAIGN_HOLD_BOUNCE_RATE`` / ``_MIN_SENDS``)."""

    bounce_rate: float = 0.05
    min_sends: int = 50


@dataclass(frozen=True)
class Facts:
    """What the holds depend on: sending domains failing their DNS checks, sends and hard
    bounces so far, sends today against the campaign's daily cap."""

    failing_domains: tuple[str, ...] = ()
    sends: int = 0
    bounces: int = 0
    sent_today: int = 0
    daily_cap: int | None = None


@dataclass(frozen=True)
class Hold:
    """One hold: its code and a human detail."""

    code: str
    detail: str


def evaluate(facts: Facts, thresholds: Thresholds = Thresholds()) -> list[Hold]:
    """The holds the facts call for (in a fixed code order)."""
    out: list[Hold] = []
    if facts.failing_domains:
        names = ", ".join(sorted(facts.failing_domains)[:5])
        out.append(Hold("domain_dns_failing", f"sending domain not verified: {names}"))
    if facts.sends >= max(1, thresholds.min_sends) and (
        facts.bounces > thresholds.bounce_rate * facts.sends
    ):
        rate = facts.bounces / facts.sends
        out.append(
            Hold(
                "bounce_rate",
                f"bounce rate {rate:.1%} over {thresholds.bounce_rate:.1%} "
                f"({facts.bounces} of {facts.sends})",
            )
        )
    if facts.daily_cap is not None and facts.sent_today >= facts.daily_cap:
        out.append(Hold("daily_cap", f"daily cap of {facts.daily_cap} reached"))
    return out


def merge(current: Sequence[Any], holds: Sequence[Hold], now: float) -> list[dict[str, Any]]:
    """The stored form of ``holds``: a hold already present keeps its ``since``."""
    since: dict[str, float] = {}
    for item in current or ():
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            value = item.get("since")
            since[item["code"]] = float(value) if isinstance(value, int | float) else now
    return [{"code": h.code, "detail": h.detail, "since": since.get(h.code, now)} for h in holds]
