"""Property tests of the pure job rules: transition tables, the UPDATE effects, counts, bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.jobs.errors import InvalidTransition, JobInputError
from server.jobs.rules import (
    GENERIC_CODE,
    GENERIC_MESSAGE,
    ITEM_TERMINAL,
    MAX_MESSAGE,
    TERMINAL,
    Counts,
    ItemEvent,
    ItemState,
    JobEvent,
    JobState,
    check_json,
    check_kind,
    check_owner,
    counts_after,
    error_code,
    error_message,
    item_effect,
    item_next,
    job_effect,
    job_next,
)

job_states = st.sampled_from(list(JobState))
job_events = st.sampled_from(list(JobEvent))
item_states = st.sampled_from(list(ItemState))
item_events = st.sampled_from(list(ItemEvent))


def _apply_case(effect: dict[Any, Any], state: Any) -> Any:
    """What the store's ``SET state = CASE ... WHERE state IN (...)`` does to one row."""
    return effect.get(state)


@given(job_states, job_events)
def test_the_update_effect_is_the_transition_table(state: JobState, event: JobEvent) -> None:
    try:
        expected: JobState | None = job_next(state, event)
    except InvalidTransition:
        expected = None
    assert _apply_case(job_effect(event), state) == expected


@given(item_states, item_events)
def test_the_item_effect_is_the_item_table(state: ItemState, event: ItemEvent) -> None:
    try:
        expected: ItemState | None = item_next(state, event)
    except InvalidTransition:
        expected = None
    assert _apply_case(item_effect(event), state) == expected


@given(st.lists(job_events, max_size=30))
def test_a_terminal_job_never_changes_and_claims_start_it(events: list[JobEvent]) -> None:
    state = JobState.QUEUED
    for event in events:
        try:
            new = job_next(state, event)
        except InvalidTransition:
            continue
        assert state not in TERMINAL, (state, event)
        if state is JobState.QUEUED:  # a queued job only starts or is cancelled
            assert new in (JobState.RUNNING, JobState.CANCELLED)
        state = new


def test_terminal_states_accept_no_event() -> None:
    for state in TERMINAL:
        for event in JobEvent:
            with pytest.raises(InvalidTransition):
                job_next(state, event)
    for istate in ITEM_TERMINAL:
        for ievent in ItemEvent:
            with pytest.raises(InvalidTransition):
                item_next(istate, ievent)


@given(st.integers(0, 40), st.lists(st.tuples(st.integers(0, 39), item_events), max_size=200))
def test_counts_follow_the_items(total: int, moves: list[tuple[int, ItemEvent]]) -> None:
    states = [ItemState.PENDING] * total
    counts = Counts(total=total)
    for index, event in moves:
        if index >= total:
            continue
        try:
            new = item_next(states[index], event)
        except InvalidTransition:
            continue
        counts = counts_after(counts, states[index], new)
        states[index] = new
    assert counts.done == states.count(ItemState.DONE)
    assert counts.failed == states.count(ItemState.FAILED)
    assert counts.skipped == states.count(ItemState.SKIPPED)
    assert counts.finished <= counts.total
    assert 0.0 <= counts.fraction <= 1.0
    assert counts.complete == all(s in ITEM_TERMINAL for s in states)


def test_counts_refuse_leaving_a_terminal_item_or_passing_the_total() -> None:
    with pytest.raises(InvalidTransition):
        counts_after(Counts(1, 1), ItemState.DONE, ItemState.PENDING)
    with pytest.raises(InvalidTransition):
        counts_after(Counts(1, 1), ItemState.PENDING, ItemState.DONE)
    same = Counts(2, 1)
    assert counts_after(same, ItemState.DONE, ItemState.DONE) is same


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@given(json_values, st.integers(1, 400))
def test_check_json_measures_the_compact_utf8_encoding(value: Any, limit: int) -> None:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size <= limit:
        assert check_json(value, limit=limit, depth=100, field="f") == size
    else:
        with pytest.raises(JobInputError) as info:
            check_json(value, limit=limit, depth=100, field="f")
        assert info.value.too_large


def test_check_json_refuses_what_is_not_json() -> None:
    for bad in (float("inf"), {"k": float("nan")}, {1, 2}, b"bytes", "\ud800"):
        with pytest.raises(JobInputError) as info:
            check_json(bad, limit=1000, depth=10, field="payload")
        assert not info.value.too_large
        assert info.value.param == "payload"
    deep: Any = {}
    for _ in range(10_000):  # far past the interpreter's recursion limit
        deep = {"a": deep}
    with pytest.raises(JobInputError, match="nested"):
        check_json(deep, limit=10**9, depth=32, field="payload")


@given(st.text())
def test_error_messages_are_one_bounded_line(text: str) -> None:
    message = error_message(text)
    assert "\n" not in message
    assert "\r" not in message
    assert 0 < len(message) <= MAX_MESSAGE
    assert error_message(None) == GENERIC_MESSAGE


@given(st.text(max_size=80))
def test_error_codes_are_snake_case_or_generic(code: str) -> None:
    result = error_code(code)
    assert result in (code, GENERIC_CODE)
    assert result.replace("_", "").isalnum()
    assert result.isascii()


def test_kind_and_owner_checks() -> None:
    assert check_kind("email.verify_bulk") == "email.verify_bulk"
    assert check_owner("user_123") == "user_123"
    for bad in ("", "A", "1x", "x" * 65, None, "a b"):
        with pytest.raises(JobInputError):
            check_kind(bad)
    for bad in ("", "a b", "x" * 201, 5, "é"):
        with pytest.raises(JobInputError):
            check_owner(bad)
