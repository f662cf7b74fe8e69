"""The pure campaign sums (server.campaigns.stats): variants add up to steps, steps (plus
unattributed lead events) to the campaign, campaigns to the aggregate; rates stay in [0, 1]."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.campaigns.stats import (
    COUNTS,
    Counts,
    aggregate,
    campaign_total,
    rates,
    steps_of,
)


@st.composite
def counts(draw: st.DrawFn) -> Counts:
    """Counts as the store produces them: sends split over states, facts within ``sent``."""
    n = st.integers(0, 50)
    sent = draw(n)
    bounced = draw(st.integers(0, sent))
    delivered = sent - bounced
    return Counts(
        queued=draw(n),
        in_flight=draw(n),
        sent=sent,
        failed=draw(n),
        cancelled=draw(n),
        bounced=bounced,
        hard_bounced=draw(st.integers(0, bounced)),
        deferred=draw(st.integers(0, delivered)),
        opened=draw(st.integers(0, sent)),
        clicked=draw(st.integers(0, sent)),
        replied=draw(st.integers(0, sent)),
        unsubscribed=draw(st.integers(0, sent)),
        opens=draw(n),
        machine_opens=draw(n),
        clicks=draw(n),
        machine_clicks=draw(n),
    )


keys = st.tuples(st.integers(0, 4), st.sampled_from(["A", "B", "C"]))
rows = st.dictionaries(keys, counts(), max_size=12)


@given(rows, counts())
def test_variants_sum_to_steps_and_steps_to_the_campaign(
    table: dict[tuple[int, str], Counts], loose: Counts
) -> None:
    steps = steps_of(table, positions=range(5))
    assert [s.position for s in steps] == [0, 1, 2, 3, 4]  # steps without sends still show
    for step in steps:
        for name in COUNTS:
            assert getattr(step.total, name) == sum(
                getattr(c, name) for (p, _), c in table.items() if p == step.position
            )
    total = campaign_total(steps, loose)
    for name in COUNTS:
        expected = sum(getattr(c, name) for c in table.values()) + getattr(loose, name)
        assert getattr(total, name) == expected
    assert total.sent == total.delivered + total.bounced
    assert total.scheduled == sum(c.scheduled for c in table.values()) + loose.scheduled


@given(st.lists(counts(), max_size=8))
def test_the_aggregate_is_the_sum_of_campaigns(campaigns: list[Counts]) -> None:
    total = aggregate(campaigns)
    for name in COUNTS:
        assert getattr(total, name) == sum(getattr(c, name) for c in campaigns)
    assert aggregate([]) == Counts()


@given(counts())
def test_rates_are_ratios_in_range(c: Counts) -> None:
    r = rates(c)
    for value in r.__dict__.values():
        assert value >= 0.0
    assert 0.0 <= r.delivered_rate <= 1.0
    assert 0.0 <= r.bounce_rate <= 1.0
    if c.sent:
        assert abs(r.delivered_rate + r.bounce_rate - 1.0) < 1e-3
    else:
        assert r.delivered_rate == r.bounce_rate == 0.0
    if c.delivered == 0:
        assert r.open_rate == r.click_rate == r.reply_rate == r.unsubscribe_rate == 0.0


def test_rates_of_a_known_campaign() -> None:
    c = Counts(sent=10, bounced=2, opened=4, clicked=2, replied=1, unsubscribed=1)
    r = rates(c)
    assert c.delivered == 8
    assert (r.delivered_rate, r.bounce_rate) == (0.8, 0.2)
    assert (r.open_rate, r.click_rate, r.reply_rate, r.unsubscribe_rate) == (
        0.5,
        0.25,
        0.125,
        0.125,
    )


def test_a_variants_counts_are_merged_when_listed_twice() -> None:
    steps = steps_of({(0, "A"): Counts(sent=1)}, positions=[0, 1])
    assert steps[0].variants == (("A", Counts(sent=1)),)
    assert steps[1].variants == ()
    assert steps[1].total == Counts()
