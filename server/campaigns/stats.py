"""Campaign stats (pure): counted facts per (step, variant) summed into steps, campaigns and an
aggregate, with rates. Every number is a sum of the level below, so the totals always add up.

Definitions (each counts *sends*: a lead's step handed to the outbox, one ``campaign_sends``
row; a send is counted at most once per fact):

- ``queued``/``in_flight``/``sent``/``failed``/``cancelled``: the outbox state of the send's
  message (``in_flight``: being handed to the relay now; ``sent``: the relay accepted it).
- ``bounced``: sent, and a delivery status notification reported a failure for it (hard, soft
  or policy, except reports of a mere delay - status 4.x.x - which are ``deferred``).
- ``delivered``: sent and not bounced. We cannot see the recipient's mailbox; a message the
  relay accepted and that no DSN reported failed is counted as delivered (so
  ``sent == delivered + bounced``).
- ``opened``/``clicked``: sent, with at least one open (click) by a person; machine opens
  (Apple Mail Privacy Protection, scanners) and scanner clicks are counted apart
  (``machine_opens``, ``machine_clicks``, event counts, not sends).
- ``replied``/``unsubscribed``: a lead event of that kind attributed to the send (by the
  message it answers, else by the lead and step); events naming no send are ``unattributed``.

Rates: ``delivered_rate`` and ``bounce_rate`` over ``sent``; open, click, reply and
unsubscribe rates over ``delivered``; 0.0 when the denominator is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Final

__all__ = [
    "COUNTS",
    "Counts",
    "Rates",
    "StepCounts",
    "aggregate",
    "campaign_total",
    "rates",
    "steps_of",
]


@dataclass(frozen=True)
class Counts:
    """Counted facts of a set of sends (all non-negative integers)."""

    queued: int = 0
    in_flight: int = 0
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    bounced: int = 0
    hard_bounced: int = 0
    deferred: int = 0
    opened: int = 0
    clicked: int = 0
    replied: int = 0
    unsubscribed: int = 0
    opens: int = 0
    machine_opens: int = 0
    clicks: int = 0
    machine_clicks: int = 0

    @property
    def scheduled(self) -> int:
        """Sends handed to the outbox, whatever became of them."""
        return self.queued + self.in_flight + self.sent + self.failed + self.cancelled

    @property
    def delivered(self) -> int:
        """Sent and not reported bounced."""
        return self.sent - self.bounced

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f: getattr(self, f) + getattr(other, f) for f in COUNTS})

    def as_dict(self) -> dict[str, int]:
        """The counts with ``scheduled`` and ``delivered``."""
        out = {f: getattr(self, f) for f in COUNTS}
        out.update(scheduled=self.scheduled, delivered=self.delivered)
        return out


COUNTS: Final = tuple(f.name for f in fields(Counts))
"""The stored count fields (``scheduled`` and ``delivered`` are derived)."""


def _total(items: Iterable[Counts]) -> Counts:
    out = Counts()
    for item in items:
        out = out + item
    return out


@dataclass(frozen=True)
class Rates:
    """Ratios of a :class:`Counts` (0.0 to 1.0, four decimals)."""

    delivered_rate: float
    bounce_rate: float
    open_rate: float
    click_rate: float
    reply_rate: float
    unsubscribe_rate: float


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def rates(counts: Counts) -> Rates:
    """The rates of ``counts`` (see the module docstring for the denominators)."""
    delivered = counts.delivered
    return Rates(
        delivered_rate=_ratio(delivered, counts.sent),
        bounce_rate=_ratio(counts.bounced, counts.sent),
        open_rate=_ratio(counts.opened, delivered),
        click_rate=_ratio(counts.clicked, delivered),
        reply_rate=_ratio(counts.replied, delivered),
        unsubscribe_rate=_ratio(counts.unsubscribed, delivered),
    )


@dataclass(frozen=True)
class StepCounts:
    """One step: its variants' counts (by label, in label order) and their sum."""

    position: int
    variants: tuple[tuple[str, Counts], ...]

    @property
    def total(self) -> Counts:
        """The sum over the step's variants."""
        return _total(c for _, c in self.variants)


def steps_of(
    rows: Mapping[tuple[int, str], Counts], positions: Iterable[int] = ()
) -> list[StepCounts]:
    """Group per-(position, variant) counts into steps, by position; ``positions`` lists the
    campaign's steps so a step nothing was sent for yet still shows (with zero counts)."""
    by_step: dict[int, dict[str, Counts]] = {p: {} for p in positions}
    for (position, label), counts in rows.items():
        held = by_step.setdefault(position, {})
        held[label] = held.get(label, Counts()) + counts
    return [StepCounts(p, tuple(sorted(by_step[p].items()))) for p in sorted(by_step)]


def campaign_total(steps: Iterable[StepCounts], unattributed: Counts = Counts()) -> Counts:
    """A campaign's counts: the sum of its steps, plus lead events naming no send."""
    return _total(s.total for s in steps) + unattributed


def aggregate(campaigns: Iterable[Counts]) -> Counts:
    """The counts across campaigns: their sum."""
    return _total(campaigns)
