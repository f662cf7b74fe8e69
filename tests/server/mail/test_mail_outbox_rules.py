"""The outbox's pure rules: the transition table, recovery, replies, back-off, token bucket, caps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.mail.outbox_rules import (
    TERMINAL,
    AmbiguityPolicy,
    DailyCaps,
    Event,
    InvalidTransition,
    RelayOutcome,
    State,
    TokenBucket,
    classify_reply,
    effect,
    next_state,
    queue_id_of,
    recovery_event,
    retry_delay,
    utc_day_start,
)


@given(st.sampled_from(list(Event)))
def test_every_event_has_one_target(event: Event) -> None:
    """One conditional UPDATE per event: its sources map to a single target (or self-loops)."""
    moves = effect(event)
    assert moves
    targets = {t for s, t in moves.items() if s != t}
    assert len(targets) <= 1
    assert not (targets and any(s == t for s, t in moves.items()))


@given(st.sampled_from(list(State)), st.sampled_from(list(Event)))
def test_terminal_states_are_never_left(state: State, event: Event) -> None:
    if state in TERMINAL:
        with pytest.raises(InvalidTransition):
            next_state(state, event)


def test_cancel_only_before_the_hand_off() -> None:
    assert next_state(State.QUEUED, Event.CANCEL) is State.CANCELLED
    with pytest.raises(InvalidTransition):
        next_state(State.SENDING, Event.CANCEL)
    assert next_state(State.QUEUED, Event.HAND_OFF) is State.SENDING
    assert next_state(State.SENDING, Event.ACCEPTED) is State.SENT
    assert next_state(State.SENDING, Event.DEFER) is State.QUEUED
    with pytest.raises(InvalidTransition):
        next_state(State.QUEUED, Event.ACCEPTED)  # never sent without a hand-off


@pytest.mark.parametrize(
    ("accepted", "policy", "event"),
    [
        (True, AmbiguityPolicy.FAIL, Event.ACCEPTED),
        (True, AmbiguityPolicy.RESEND, Event.ACCEPTED),
        (False, AmbiguityPolicy.FAIL, Event.REQUEUE),
        (False, AmbiguityPolicy.RESEND, Event.REQUEUE),
        (None, AmbiguityPolicy.FAIL, Event.FAIL),
        (None, AmbiguityPolicy.RESEND, Event.REQUEUE),
    ],
)
def test_recovery_rule(accepted: bool | None, policy: AmbiguityPolicy, event: Event) -> None:
    assert recovery_event(accepted, policy) is event
    assert State.SENDING in effect(event)


@pytest.mark.parametrize(
    ("reply", "queue_id"),
    [
        ("2.0.0 Ok: queued as 4XbT2m0c7Hz1", "4XbT2m0c7Hz1"),
        ("OK id=1rXyZ-000abc-Q1", None),
        ("queued as ", None),
    ],
)
def test_queue_id(reply: str, queue_id: str | None) -> None:
    assert queue_id_of(reply) == queue_id


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, RelayOutcome.ACCEPTED),
        (451, RelayOutcome.TEMPORARY),
        (421, RelayOutcome.TEMPORARY),
        (None, RelayOutcome.TEMPORARY),
        (550, RelayOutcome.PERMANENT),
        (554, RelayOutcome.PERMANENT),
        (999, RelayOutcome.TEMPORARY),
    ],
)
def test_classify(code: int | None, outcome: RelayOutcome) -> None:
    assert classify_reply(code) is outcome


@given(st.integers(0, 1000))
def test_retry_delay_grows_and_is_capped(attempts: int) -> None:
    delay = retry_delay(attempts)
    assert 0 <= delay <= 3600
    assert retry_delay(attempts + 1) >= delay


@given(
    st.floats(0.5, 100),
    st.integers(1, 20),
    st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60),
)
def test_bucket_never_exceeds_rate_plus_burst(rate: float, burst: int, gaps: list[float]) -> None:
    """Tokens taken over any run never exceed burst + rate x elapsed; waits are honest."""
    bucket = TokenBucket.full(rate, burst, 0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        bucket, wait = bucket.take(now)
        if wait == 0:
            taken += 1
        else:
            _later, again = bucket.take(now + wait + 1e-9)
            assert again == 0
        assert 0 <= bucket.tokens <= burst
    assert taken <= burst + rate * now + 1e-6


def test_bucket_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket.full(0, 1, 0)


def test_daily_caps() -> None:
    assert DailyCaps().refusal(10**9, 10**9) is None
    assert DailyCaps(per_domain=5).refusal(5, 0) == "domain"
    assert DailyCaps(per_alias=2).refusal(1, 2) == "alias"
    assert DailyCaps(per_domain=5, per_alias=2).refusal(4, 1) is None
    assert utc_day_start(86400 * 3 + 5.5) == 86400 * 3
