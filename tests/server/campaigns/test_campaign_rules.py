"""The user's campaign state machine: properties over random action sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.campaigns import rules
from server.campaigns.rules import ACTIONS, STATES, TERMINAL, apply, frozen_fields

STATE = st.sampled_from(STATES)
ACTION = st.sampled_from(ACTIONS)
FIELD_SETS = st.frozensets(st.sampled_from(rules.FIELDS))


@given(st.lists(ACTION, max_size=30))
def test_every_walk_from_draft_stays_in_the_known_states_and_never_returns_to_draft(
    actions: list[rules.Action],
) -> None:
    state: rules.State = "draft"
    left_draft = False
    for action in actions:
        outcome = apply(state, action)
        if outcome is None:
            continue
        assert outcome.state in STATES
        assert outcome.changed == (outcome.state != state)
        left_draft = left_draft or outcome.state != "draft"
        if left_draft:
            assert outcome.state != "draft"
        state = outcome.state


@given(STATE, ACTION)
def test_terminal_states_never_change(state: rules.State, action: rules.Action) -> None:
    outcome = apply(state, action)
    if state in TERMINAL:
        assert outcome is None or not outcome.changed


@given(STATE)
def test_launch_only_from_draft_and_only_to_active(state: rules.State) -> None:
    outcome = apply(state, "launch")
    assert (outcome is not None) == (state == "draft")
    if outcome is not None:
        assert outcome.state == "active"


@given(STATE, st.sampled_from(["pause", "resume", "cancel"]))
def test_pause_resume_cancel_are_idempotent(state: rules.State, action: rules.Action) -> None:
    first = apply(state, action)
    if first is not None:
        again = apply(first.state, action)
        assert again is not None
        assert again.state == first.state
        assert not again.changed


@given(STATE)
def test_pause_and_resume_are_inverse_while_running(state: rules.State) -> None:
    paused = apply(state, "pause")
    if paused is None:
        assert state != "active"
        return
    resumed = apply(paused.state, "resume")
    assert resumed is not None
    assert resumed.state == "active"


def test_the_table_is_the_documented_graph() -> None:
    changing = {(s, a): n for (s, a), n in rules.TRANSITIONS.items() if s != n}
    assert changing == {
        ("draft", "launch"): "active",
        ("draft", "cancel"): "cancelled",
        ("active", "pause"): "paused",
        ("active", "cancel"): "cancelled",
        ("active", "complete"): "completed",
        ("paused", "resume"): "active",
        ("paused", "cancel"): "cancelled",
        ("paused", "complete"): "completed",
    }
    assert "active" not in rules.DELETABLE


@given(STATE, FIELD_SETS)
def test_frozen_fields_grow_as_the_campaign_ages(
    state: rules.State, fields: frozenset[str]
) -> None:
    frozen = set(frozen_fields(state, fields))
    assert frozen <= fields
    if state == "draft":
        assert not frozen
    else:
        assert {"steps", "dataset_id", "email_column", "requires_approval"} & fields <= frozen
        assert set(frozen_fields("active", fields)) <= set(frozen_fields("completed", fields))
    if state in TERMINAL:
        assert frozen == fields - {"name"}
    assert frozen_fields(state, fields) == sorted(frozen)
