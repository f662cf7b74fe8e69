"""Greylisting: when to ask again (the server's hint, else the schedule), and the one retry loop.

:func:`retry_delay` is pure: the longest delay a waiting address's reply named ("please try again
in 300 seconds", parsed by :func:`~emailintel.smtp.replies.parse_retry_after`) plus a second of
slack, else the schedule's delay for this attempt; never more than a cap, and no retry at all
when the wait would pass the caller's deadline. :func:`retry_greylisted` is the only loop that
waits and probes again (``Prober.probe_with_retries`` and ``verify_many`` both use it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

from emailintel.models import SmtpFacts
from emailintel.smtp.replies import parse_retry_after

__all__ = ["GREYLIST_WAIT_CAP", "HINT_SLACK", "hint_of", "retry_delay", "retry_greylisted"]

GREYLIST_WAIT_CAP: Final = 3600.0
"""Seconds one retry may wait at most, whatever a reply or the schedule says."""

HINT_SLACK: Final = 1.0
"""Seconds added to a server's hint, so the retry lands after its window rather than on its edge."""

Probe = Callable[[list[str]], Awaitable[Mapping[str, SmtpFacts]]]


def hint_of(facts: SmtpFacts) -> float | None:
    """The delay the reply behind ``facts`` named, or None when it named none."""
    if facts.reply is None:
        return None
    return parse_retry_after(facts.reply.message)


def retry_delay(
    attempt: int,
    schedule: Sequence[float],
    hints: Iterable[float | None],
    *,
    remaining: float | None = None,
    cap: float = GREYLIST_WAIT_CAP,
) -> float | None:
    """Seconds to wait before retry ``attempt`` (0-based), or None: retry no more.

    ``hints`` are the delays the waiting addresses' replies named (None: none named);
    ``remaining`` is how long the caller may still wait in all (None: no deadline).
    """
    if attempt < 0:
        raise ValueError(f"attempt must not be negative, got {attempt!r}")
    if attempt >= len(schedule):
        return None
    named = [hint for hint in hints if hint is not None]
    delay = max(named) + HINT_SLACK if named else schedule[attempt]
    delay = min(max(delay, 0.0), cap)
    if remaining is not None and delay > remaining:
        return None
    return delay


async def retry_greylisted(
    facts: dict[str, SmtpFacts],
    probe: Probe,
    schedule: Sequence[float],
    *,
    deadline: float | None = None,
    cap: float = GREYLIST_WAIT_CAP,
    on_final: Callable[[list[str]], None] | None = None,
    on_wait: Callable[[int, float | None], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, SmtpFacts]:
    """Probe the greylisted addresses of ``facts`` again until none is left or retries run out.

    ``probe(addresses)`` asks again; ``deadline`` is a ``clock()`` time no wait may pass.
    ``on_final`` hears addresses whose facts are final (before each wait, and at the end);
    ``on_wait(waiting, delay)`` hears each wait, and ``(0, None)`` once waiting is over (before
    the last addresses are reported) if there was one.
    Updates and returns ``facts``.
    """
    reported: set[str] = set()

    def report(addresses: list[str]) -> None:
        fresh = [address for address in addresses if address not in reported]
        reported.update(fresh)
        if fresh and on_final is not None:
            on_final(fresh)

    waited = False
    for attempt in range(len(schedule) + 1):
        waiting = [address for address, found in facts.items() if found.greylisted]
        remaining = None if deadline is None else deadline - clock()
        hints = [hint_of(facts[address]) for address in waiting]
        delay = retry_delay(attempt, schedule, hints, remaining=remaining, cap=cap)
        if not waiting or delay is None:
            break
        report([address for address in facts if address not in waiting])
        if on_wait is not None:
            on_wait(len(waiting), delay)
        waited = True
        await sleep(delay)
        facts.update(await probe(waiting))
    if waited and on_wait is not None:
        on_wait(0, None)
    report(list(facts))
    return facts
