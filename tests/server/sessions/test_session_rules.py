"""Pure session rules: the state table, sender-data merging, leads flattened into rows, field
guessing, row planning and the credits a plan reserves (property tests)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.billing.pricing import DEFAULT_PRICES, credits_for
from server.jobs.models import JobItem
from server.jobs.rules import ItemState
from server.sessions.processing import delivered_credits, plan_items
from server.sessions.rules import (
    ENRICHMENTS,
    PRICE_KEYS,
    InvalidSessionTransition,
    LeadFields,
    SessionEvent,
    SessionState,
    cells_of,
    fields_of,
    flatten_lead,
    guess_mapping,
    merge_sender_data,
    next_state,
    plan_row,
    sources,
)

S, E = SessionState, SessionEvent
states = st.sampled_from(list(SessionState))
events = st.sampled_from([e for e in SessionEvent if e is not SessionEvent.ABORT])


def test_the_table() -> None:
    assert next_state(S.CREATED, E.START) is S.PROCESSING
    for again in (S.COMPLETED, S.FAILED):
        assert next_state(again, E.START) is S.PROCESSING
    assert next_state(S.PROCESSING, E.SUCCEED) is S.COMPLETED
    assert next_state(S.PROCESSING, E.FAIL) is S.FAILED
    assert next_state(S.PROCESSING, E.CANCEL) is S.CANCELLED
    for refused in (S.PROCESSING, S.CANCELLED):
        with pytest.raises(InvalidSessionTransition):
            next_state(refused, E.START)


@given(states, events)
def test_sources_agree_with_the_table(state: SessionState, event: SessionEvent) -> None:
    if state in sources(event):
        assert next_state(state, event) in SessionState
    else:
        with pytest.raises(InvalidSessionTransition):
            next_state(state, event)


@given(states, states)
def test_abort_returns_to_where_start_left(state: SessionState, before: SessionState) -> None:
    if state is S.PROCESSING and before in sources(E.START):
        assert next_state(state, E.ABORT, before=before) is before
    else:
        with pytest.raises(InvalidSessionTransition):
            next_state(state, E.ABORT, before=before)


@given(st.lists(events, max_size=12))
def test_every_run_of_events_stays_in_the_table(run: list[SessionEvent]) -> None:
    state = S.CREATED
    for event in run:
        if state in sources(event):
            after = next_state(state, event)
            assert (state is S.PROCESSING) != (after is S.PROCESSING)
            state = after
    assert state in SessionState


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
objects = st.dictionaries(st.text(min_size=1, max_size=4), json_scalars, max_size=5)


@given(objects, st.lists(objects, max_size=4))
def test_merge_is_last_writer_wins_and_null_removes(
    current: dict[str, Any], updates: list[dict[str, Any]]
) -> None:
    merged = merge_sender_data(current, updates, "merge")
    for key in {k for u in updates for k in u}:
        last = [u[key] for u in updates if key in u][-1]
        if last is None:
            assert key not in merged
        else:
            assert merged[key] == last
    untouched = set(current) - {k for u in updates for k in u}
    assert all(merged[k] == current[k] for k in untouched)
    replaced = merge_sender_data(current, updates, "replace")
    assert replaced == merge_sender_data({}, updates, "merge")


def test_flatten_strips_column_values_and_keeps_collisions() -> None:
    cells, reason = flatten_lead(
        {
            "name": "Top",
            "columnValues": {"name": "Ann Lee", "Company": "Acme", "n": 3, "ok": True},
            "columnValues.Title": "CTO",
            "score": 1.0,
        }
    )
    assert reason is None
    assert cells == {
        "name (lead)": "Top",
        "score": "1",
        "name": "Ann Lee",
        "Company": "Acme",
        "n": "3",
        "ok": "true",
        "Title": "CTO",
    }


@pytest.mark.parametrize(
    ("lead", "reason"),
    [
        ({}, "the lead has no values"),
        ({"a": None, "b": " "}, "the lead has no values"),
        ({"a": {"b": 1}}, "field 'a' is not a scalar"),
        ({"a": [1]}, "field 'a' is not a scalar"),
        ({"columnValues": {"x": {"y": 1}}}, "columnValues.x is not a scalar"),
        ({" ": "x"}, "a field name is blank"),
        ({"a": "x" * 10_001}, "field 'a' is over 10000 characters"),
    ],
)
def test_flatten_rejects_with_a_reason(lead: dict[str, Any], reason: str) -> None:
    assert flatten_lead(lead) == ({}, reason)


@given(st.dictionaries(st.text(min_size=1, max_size=6), json_scalars, max_size=8))
def test_flatten_is_total_on_flat_objects(lead: dict[str, Any]) -> None:
    cells, reason = flatten_lead(lead)
    assert (reason is None) == bool(cells)
    assert all(isinstance(v, str) for v in cells.values())


def test_guess_mapping_and_fields() -> None:
    columns = ["Work Email", "First Name", "Last Name", "Company Name", "Website", "Job Title"]
    sample = [
        dict(zip(columns, ["a@b.test", "Ann", "Lee", "Acme", "acme.test", "CTO"], strict=True))
    ]
    mapping = guess_mapping(columns, sample)
    assert mapping == {
        "email": "Work Email",
        "first_name": "First Name",
        "last_name": "Last Name",
        "company": "Company Name",
        "domain": "Website",
        "title": "Job Title",
    }
    lead = fields_of(
        {"Work Email": " a@b.test ", "First Name": "Ann", "Last Name": "", "Website": ""},
        {**mapping, "name": "Full"},
    )
    assert lead.email == "a@b.test"
    assert lead.full_name is None
    split = fields_of(
        {"Full": "Ann  Van Lee", "Site": "https://www.Acme.test/about"},
        {
            "name": "Full",
            "domain": "Site",
        },
    )
    assert (split.first_name, split.last_name, split.domain) == ("Ann", "Lee", "acme.test")


def test_plan_row_needs_the_fields() -> None:
    every = list(ENRICHMENTS)
    assert plan_row(LeadFields(), every) == ()
    assert plan_row(LeadFields(email="a@b.test"), every) == ("validate", "verify")
    named = LeadFields(first_name="A", last_name="B", company="C")
    assert plan_row(named, every) == ("find", "linkedin")
    assert plan_row(named, ["linkedin"]) == ("linkedin",)


rows = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "email": st.just("a@b.test"),
            "first_name": st.just("Ann"),
            "last_name": st.just("Lee"),
            "company": st.just("Acme"),
        },
    ),
    max_size=30,
)


@given(rows, st.lists(st.sampled_from(ENRICHMENTS), min_size=1, unique=True))
def test_plan_reserves_each_enrichment_per_able_row(
    data: list[dict[str, str]], wanted: list[Any]
) -> None:
    mapping = {k: k for k in ("email", "first_name", "last_name", "company")}
    plan = plan_items(list(enumerate(data)), mapping, wanted)
    assert len(plan.items) + plan.skipped == len(data)
    for enrichment in wanted:
        able = sum(1 for item in plan.items if enrichment in item["do"])
        assert plan.units.get(PRICE_KEYS[enrichment], 0) == able
    expected = sum(credits_for(DEFAULT_PRICES[k], n).total for k, n in plan.units.items())
    assert plan.credits(DEFAULT_PRICES) == expected
    # delivering everything costs what was reserved; nothing costs nothing
    done = [
        JobItem("j", i, item, ItemState.DONE, {"charged": item["do"]}, None, 1)
        for i, item in enumerate(plan.items)
    ]
    assert delivered_credits(plan.units, DEFAULT_PRICES, done) == expected
    assert delivered_credits(plan.units, DEFAULT_PRICES, []) == 0


def test_cells_of_each_enrichment() -> None:
    assert cells_of("validate", {"risk_level": "safe", "score": 90}) == {
        "risk": "safe",
        "risk_score": 90,
    }
    assert cells_of("verify", {"risk_level": "risky", "smtp": {"accepted": False}}) == {
        "verified": "risky",
        "mailbox_exists": False,
    }
    assert cells_of("find", {"email": "a@b.test", "pattern": "{first}"})["found_email"] == (
        "a@b.test"
    )
    assert cells_of("linkedin", {"best": {"url": "u", "score": 0.9}})["linkedin_url"] == "u"
    assert cells_of("linkedin", {"best": None})["linkedin_url"] is None
