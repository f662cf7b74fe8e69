"""Credit hold transitions and their balance effects (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.billing.credit_rules import (
    MAX_AMOUNT,
    CreditRuleError,
    HoldEvent,
    HoldState,
    effect,
    next_state,
    validate_amount,
)


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        (HoldState.HELD, HoldEvent.CAPTURE, HoldState.CAPTURED),
        (HoldState.HELD, HoldEvent.RELEASE, HoldState.RELEASED),
        (HoldState.HELD, HoldEvent.EXPIRE, HoldState.EXPIRED),
    ],
)
def test_a_held_hold_settles(state: HoldState, event: HoldEvent, after: HoldState) -> None:
    assert next_state(state, event) is after


@given(
    st.sampled_from([s for s in HoldState if s is not HoldState.HELD]), st.sampled_from(HoldEvent)
)
def test_a_settled_hold_never_moves_again(state: HoldState, event: HoldEvent) -> None:
    with pytest.raises(CreditRuleError):
        next_state(state, event)


@given(st.integers(1, MAX_AMOUNT), st.data())
def test_effects_keep_the_account_covered(held: int, data: st.DataObject) -> None:
    """From any covered account, settling a hold leaves it covered and never adds money."""
    balance = data.draw(st.integers(held, MAX_AMOUNT * 2))
    event = data.draw(st.sampled_from(HoldEvent))
    captured = data.draw(st.integers(0, held)) if event is HoldEvent.CAPTURE else 0
    change = effect(event, held, captured)
    new_balance, new_held = balance + change.balance_delta, held + change.held_delta
    assert new_held == 0
    assert new_balance >= new_held
    assert change.balance_delta <= 0
    assert balance - new_balance == captured


def test_capturing_more_than_held_is_refused() -> None:
    with pytest.raises(CreditRuleError):
        effect(HoldEvent.CAPTURE, 3, 4)
    with pytest.raises(CreditRuleError):
        effect(HoldEvent.CAPTURE, 3, -1)


@pytest.mark.parametrize("bad", [0, -1, MAX_AMOUNT + 1, True, 1.5, "3"])
def test_amounts_are_whole_and_bounded(bad: object) -> None:
    with pytest.raises(CreditRuleError):
        validate_amount(bad)  # type: ignore[arg-type]
    assert validate_amount(0, allow_zero=True) == 0
    assert validate_amount(MAX_AMOUNT) == MAX_AMOUNT
