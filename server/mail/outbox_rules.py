"""Pure rules of the outbox: message states, the transition table (each event one conditional
UPDATE), what recovery does with a message a dead worker left mid hand-off, relay replies,
retry back-off and the per-domain send-rate token bucket.

No I/O, so every rule is property-tested; :mod:`server.mail.outbox` builds its statements from
:func:`effect`.

Crash safety. A worker claims queued messages with a lease, marks one ``sending`` (a fresh
attempt token) in the same commit that records the previous one ``sent``, hands it to the relay,
and records ``sent`` with the relay's queue id as soon as the ``250`` is read. A worker killed
between the end of DATA and that commit leaves a ``sending`` row whose fate only the relay knows:
the *ambiguity window* (one message per connection at most). Recovery asks a
:class:`HandoffProbe`-style answer (accepted / not accepted / unknown) and applies
:func:`recovery_event`: accepted -> ``sent``; not accepted -> ``queued`` again (the same bytes and
Message-ID); unknown -> the configured policy: ``fail`` (at most once: the email is marked failed,
``handoff_unknown``, never sent twice) or ``resend`` (at least once: receivers that deduplicate by
Message-ID drop the copy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "AmbiguityPolicy",
    "CapReached",
    "Event",
    "InvalidTransition",
    "RelayOutcome",
    "State",
    "TokenBucket",
    "classify_reply",
    "effect",
    "next_state",
    "queue_id_of",
    "recovery_event",
    "retry_delay",
]


class InvalidTransition(ValueError):
    """An event the table does not allow in a message's state."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"event {event!r} is not allowed in state {state!r}")
        self.state = state
        self.event = event


class State(StrEnum):
    """Life of one message; ``sent``, ``failed`` and ``cancelled`` are terminal."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Event(StrEnum):
    """What the owner, a worker or recovery does to a message."""

    CLAIM = "claim"  # a worker leases a due queued message (or one whose lease expired)
    HAND_OFF = "hand_off"  # the lease holder is about to give it to the relay (attempt token)
    ACCEPTED = "accepted"  # the relay answered 250 (queue id), or recovery learnt it did
    DEFER = "defer"  # a 4xx or a broken connection before the end of DATA: try again later
    FAIL = "fail"  # a 5xx, too many attempts, every recipient suppressed, or handoff_unknown
    RELEASE = "release"  # the lease holder gives a claimed message back (stop, rate limit)
    RECOVER = "recover"  # a worker takes over a sending message whose lease expired
    REQUEUE = "requeue"  # recovery: the relay never got it; queue it again
    CANCEL = "cancel"  # the owner, until the hand-off


TERMINAL: frozenset[State] = frozenset({State.SENT, State.FAILED, State.CANCELLED})
ACTIVE: frozenset[State] = frozenset(State) - TERMINAL

Q, S = State.QUEUED, State.SENDING
_TRANSITIONS: dict[tuple[State, Event], State] = {
    (Q, Event.CLAIM): Q,
    (Q, Event.HAND_OFF): S,
    (S, Event.ACCEPTED): State.SENT,
    (S, Event.DEFER): Q,
    (Q, Event.FAIL): State.FAILED,
    (S, Event.FAIL): State.FAILED,
    (Q, Event.RELEASE): Q,
    (S, Event.RECOVER): S,
    (S, Event.REQUEUE): Q,
    (Q, Event.CANCEL): State.CANCELLED,
}

# Events only the lease holder may apply (the store adds the guard); HAND_OFF onwards also
# need the attempt token, so a worker whose lease moved on cannot record an outcome.
LEASED: frozenset[Event] = frozenset(
    {Event.HAND_OFF, Event.ACCEPTED, Event.DEFER, Event.FAIL, Event.RELEASE, Event.REQUEUE}
)


def next_state(state: State, event: Event) -> State:
    """The state after ``event``, or :class:`InvalidTransition`."""
    try:
        return _TRANSITIONS[(State(state), Event(event))]
    except KeyError:
        raise InvalidTransition(str(state), str(event)) from None


def effect(event: Event) -> dict[State, State]:
    """Every state ``event`` applies in, mapped to the state it leads to (the UPDATE's CASE)."""
    return {s: t for (s, e), t in _TRANSITIONS.items() if e == Event(event)}


# --- recovery of the ambiguity window ---------------------------------------------------------


class AmbiguityPolicy(StrEnum):
    """What recovery does when nobody can tell whether the relay accepted a message."""

    FAIL = "fail"  # at most once: mark it failed (handoff_unknown); the owner decides
    RESEND = "resend"  # at least once: send the same bytes (same Message-ID) again


def recovery_event(accepted: bool | None, policy: AmbiguityPolicy) -> Event:
    """The event for a ``sending`` message left by a dead worker, given the relay's answer."""
    if accepted is True:
        return Event.ACCEPTED
    if accepted is False:
        return Event.REQUEUE
    return Event.FAIL if policy is AmbiguityPolicy.FAIL else Event.REQUEUE


# --- relay replies ----------------------------------------------------------------------------


class RelayOutcome(StrEnum):
    """What a relay's reply to a message means for it."""

    ACCEPTED = "accepted"
    TEMPORARY = "temporary"  # 4xx, or no reply: retry with back-off
    PERMANENT = "permanent"  # 5xx: fail now


_QUEUED_AS = re.compile(r"queued as ([A-Za-z0-9]{1,64})")


def queue_id_of(reply: str) -> str | None:
    """The relay's queue id in a ``250 ... queued as X`` reply (Postfix, Exim, most MTAs)."""
    match = _QUEUED_AS.search(reply)
    return match.group(1) if match else None


def classify_reply(code: int | None) -> RelayOutcome:
    """2xx accepted, 5xx permanent, everything else (4xx, no reply) temporary."""
    if code is not None and 200 <= code < 300:
        return RelayOutcome.ACCEPTED
    if code is not None and 500 <= code < 600:
        return RelayOutcome.PERMANENT
    return RelayOutcome.TEMPORARY


def retry_delay(attempts: int, base: float = 60.0, cap: float = 3600.0) -> float:
    """Seconds before attempt ``attempts + 1``: doubling from ``base``, at most ``cap``."""
    if attempts < 1:
        return 0.0
    return min(cap, base * 2.0 ** min(attempts - 1, 30))


# --- send rate ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """A token bucket: ``rate`` tokens a second up to ``burst``; immutable, so pure."""

    rate: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """A bucket holding ``burst`` tokens at ``now``."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate > 0 and burst >= 1")
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> tuple[TokenBucket, float]:
        """(bucket after, seconds to wait): wait 0 means a token was taken now."""
        tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        at = max(now, self.at)
        if tokens >= 1.0:
            return TokenBucket(self.rate, self.burst, tokens - 1.0, at), 0.0
        return TokenBucket(self.rate, self.burst, tokens, at), (1.0 - tokens) / self.rate


class CapReached(Exception):
    """A daily cap (``domain`` or ``alias``) is reached."""

    def __init__(self, which: str, cap: int) -> None:
        super().__init__(f"the {which} daily cap of {cap} messages is reached")
        self.which = which
        self.cap = cap


@dataclass(frozen=True, slots=True)
class DailyCaps:
    """Per sending domain and per sending address (alias) messages a UTC day; 0: no cap."""

    per_domain: int = 0
    per_alias: int = 0

    def check(self, domain_count: int, alias_count: int) -> None:
        """Raise CapReached when one more message would exceed a cap."""
        which = self.refusal(domain_count, alias_count)
        if which is not None:
            raise CapReached(which, self.per_domain if which == "domain" else self.per_alias)

    def refusal(self, domain_count: int, alias_count: int) -> str | None:
        """Which cap one more message would exceed (``domain``/``alias``), or None."""
        if self.per_domain and domain_count >= self.per_domain:
            return "domain"
        if self.per_alias and alias_count >= self.per_alias:
            return "alias"
        return None


def utc_day_start(now: float) -> float:
    """The epoch second the UTC day of ``now`` began (daily caps count from there)."""
    return now - (now % 86400.0)
