"""When a campaign may send (pure): the sending window in the campaign's IANA time zone (weekdays,
start and end wall-clock times, DST included), the minimum gap between two sends of one mailbox
plus a jitter derived deterministically from the mailbox and its last send, and the daily caps
per sending alias and per campaign, counted per local day.

Times are UNIX seconds; the caller passes ``now`` (an injected clock), nothing here reads one.
A schedule is ``{timezone, days, start, end, min_gap_seconds, jitter_seconds}``: ``days`` are
Python weekdays (0 = Monday), ``start``/``end`` ``"HH:MM"`` local times (``end``
exclusive, ``"24:00"`` allowed), the window is [start, end) on each listed day.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Schedule",
    "ScheduleError",
    "cap_left",
    "jitter",
    "local_day_start",
    "next_send_time",
    "next_window_start",
    "parse_schedule",
    "window_open",
]

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")
_SEARCH_DAYS = 9
"""Days searched ahead for an open window (a week plus DST slack)."""
MAX_GAP_SECONDS = 7 * 86400
MAX_JITTER_SECONDS = 86400


class ScheduleError(ValueError):
    """A schedule that cannot be used (unknown zone, bad time, no day)."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: minutes of the day for ``start``/``end``."""

    zone: ZoneInfo
    days: frozenset[int]
    start: int
    end: int
    min_gap_seconds: int = 0
    jitter_seconds: int = 0

    @property
    def has_window(self) -> bool:
        """Whether any time at all can be inside the window."""
        return bool(self.days) and self.end > self.start


def _minutes(value: object, name: str) -> int:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise ScheduleError(f"{name} must be HH:MM")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _bounded(raw: Mapping[str, Any], name: str, top: int) -> int:
    value = raw.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ScheduleError(f"{name} must be an integer from 0 to {top}")
    return value


def parse_schedule(raw: Mapping[str, Any]) -> Schedule:
    """A :class:`Schedule` from its stored JSON form (ScheduleError when unusable)."""
    zone_name = raw.get("timezone", "UTC")
    if not isinstance(zone_name, str) or not 0 < len(zone_name) <= 64 or ".." in zone_name:
        raise ScheduleError("timezone must be an IANA time zone name")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {zone_name[:64]!r}") from None
    days = raw.get("days", list(range(7)))
    if not isinstance(days, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in days
    ):
        raise ScheduleError("days must be a list of weekdays 0 (Monday) to 6 (Sunday)")
    return Schedule(
        zone=zone,
        days=frozenset(days),
        start=_minutes(raw.get("start", "00:00"), "start"),
        end=_minutes(raw.get("end", "24:00"), "end"),
        min_gap_seconds=_bounded(raw, "min_gap_seconds", MAX_GAP_SECONDS),
        jitter_seconds=_bounded(raw, "jitter_seconds", MAX_JITTER_SECONDS),
    )


def _local(schedule: Schedule, at: float) -> datetime:
    return datetime.fromtimestamp(at, schedule.zone)


def window_open(schedule: Schedule, at: float) -> bool:
    """Whether ``at`` is inside the sending window (local weekday and wall-clock time)."""
    local = _local(schedule, at)
    minute = local.hour * 60 + local.minute
    return local.weekday() in schedule.days and schedule.start <= minute < schedule.end


def _at(schedule: Schedule, day: date, minute: int) -> float:
    """The instant of local ``day`` at ``minute`` (a time skipped by DST falls after the gap,
    a repeated one is its first occurrence)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=schedule.zone)
    wall = midnight.replace(tzinfo=None) + timedelta(minutes=minute)
    return wall.replace(tzinfo=schedule.zone).timestamp()


def next_window_start(schedule: Schedule, at: float) -> float | None:
    """The earliest instant >= ``at`` inside the window; None when the schedule has none."""
    if not schedule.has_window:
        return None
    if window_open(schedule, at):
        return at
    today = _local(schedule, at).date()
    for offset in range(_SEARCH_DAYS):
        day = today + timedelta(days=offset)
        if day.weekday() not in schedule.days:
            continue
        begin = _at(schedule, day, schedule.start)
        if _at(schedule, day, schedule.end) <= at and begin <= at:
            continue  # today's window is over
        candidate = max(begin, at)
        if window_open(schedule, candidate):
            return candidate
        # A DST change moved the window's edges: walk the minutes around its start.
        probe = max(at, begin - 3600.0)
        probe = max(at, probe - probe % 60.0)
        while probe < begin + 7200.0:
            if window_open(schedule, probe):
                return probe
            probe = probe - probe % 60.0 + 60.0
    return None


def jitter(seed: str, jitter_seconds: int) -> int:
    """A deterministic pseudo-random delay in [0, ``jitter_seconds``] for ``seed``."""
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (jitter_seconds + 1)


def next_send_time(
    schedule: Schedule, now: float, mailbox: str, last_send: float | None
) -> float | None:
    """When ``mailbox`` may send next: after ``now``, at least the minimum gap plus its jitter
    (seeded by the mailbox and its last send) after ``last_send``, inside the window."""
    earliest = now
    if last_send is not None:
        spacing = schedule.min_gap_seconds + jitter(
            f"{mailbox}:{last_send!r}", schedule.jitter_seconds
        )
        earliest = max(earliest, last_send + spacing)
    return next_window_start(schedule, earliest)


def local_day_start(schedule: Schedule, at: float) -> float:
    """The instant the local day of ``at`` began (daily caps count from here)."""
    return _at(schedule, _local(schedule, at).date(), 0)


def cap_left(cap: int | None, sent_today: int) -> int | None:
    """Sends left today under ``cap`` (None: no cap)."""
    return None if cap is None else max(0, cap - sent_today)
