"""The pure cores of the sequencer: sending windows (IANA zones, DST), mailbox gap and jitter,
daily caps per local day; variants; holds; content rendering. Hypothesis where a property
says it all, fixed examples for the DST edges."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.campaigns import holds
from server.campaigns.content import ContentError, TemplateParts, render_step, with_unsubscribe
from server.campaigns.schedule import (
    ScheduleError,
    cap_left,
    jitter,
    local_day_start,
    next_send_time,
    next_window_start,
    parse_schedule,
    window_open,
)
from server.campaigns.variants import pick

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
times = st.floats(min_value=1_700_000_000, max_value=1_900_000_000, allow_nan=False)
hhmm = st.integers(0, 24 * 60).map(
    lambda m: "24:00" if m == 1440 else f"{m // 60:02d}:{m % 60:02d}"
)
schedules = st.fixed_dictionaries(
    {
        "timezone": st.sampled_from(ZONES),
        "days": st.lists(st.integers(0, 6), max_size=7, unique=True),
        "start": hhmm,
        "end": hhmm,
        "min_gap_seconds": st.integers(0, 7200),
        "jitter_seconds": st.integers(0, 600),
    }
)


def _ts(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(schedules, times)
def test_next_window_start_is_open_and_not_early(raw: dict[str, object], at: float) -> None:
    """The answer is at or after ``at``, inside the window, and no whole minute before it in
    between was open; None only when the schedule has no window at all."""
    schedule = parse_schedule(raw)
    found = next_window_start(schedule, at)
    if found is None:
        assert not schedule.has_window or not any(
            window_open(schedule, at + i * 900) for i in range(8 * 96)
        )
        return
    assert found >= at
    assert window_open(schedule, found)
    step = 60.0
    probe = at
    while probe + step < found:
        probe += step
        assert not window_open(schedule, probe)


@settings(max_examples=200, deadline=None)
@given(schedules, times, times)
def test_next_send_time_respects_the_mailbox_gap(
    raw: dict[str, object], now: float, last: float
) -> None:
    """A mailbox never sends sooner than its gap (plus its deterministic jitter) after its
    last send, and the same inputs always give the same time."""
    schedule = parse_schedule(raw)
    last = min(last, now)
    at = next_send_time(schedule, now, "als_1", last)
    assert at == next_send_time(schedule, now, "als_1", last)
    if at is not None:
        assert at >= now
        assert at >= last + schedule.min_gap_seconds
        assert at <= last + schedule.min_gap_seconds + schedule.jitter_seconds or window_open(
            schedule, at
        )


@given(st.text(max_size=40), st.integers(0, 10_000))
def test_jitter_is_bounded_and_deterministic(seed: str, spread: int) -> None:
    """Jitter lies in [0, spread] and depends on the seed only."""
    value = jitter(seed, spread)
    assert 0 <= value <= spread
    assert value == jitter(seed, spread)


def test_jitter_spreads() -> None:
    """Different seeds give different delays (not a constant)."""
    assert len({jitter(f"m{i}", 3600) for i in range(200)}) > 150


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ZONES), times)
def test_local_day_start(zone: str, at: float) -> None:
    """The local day starts at local midnight of ``at``'s date (23 to 25 hours a day)."""
    schedule = parse_schedule({"timezone": zone})
    start = local_day_start(schedule, at)
    assert start <= at < start + 25 * 3600
    local = datetime.fromtimestamp(start, ZoneInfo(zone))
    assert local.date() == datetime.fromtimestamp(at, ZoneInfo(zone)).date()
    assert (local.hour, local.minute) == (0, 0)


def test_spring_forward_window() -> None:
    """New York's 2026-03-08 02:00 does not exist: a 02:30-04:00 window opens at 03:00 EDT."""
    schedule = parse_schedule(
        {"timezone": "America/New_York", "days": [6], "start": "02:30", "end": "04:00"}
    )
    found = next_window_start(schedule, _ts("America/New_York", 2026, 3, 8, 0, 0))
    assert found is not None
    local = datetime.fromtimestamp(found, ZoneInfo("America/New_York"))
    assert (local.month, local.day, local.hour) == (3, 8, 3)


def test_fall_back_and_weekdays() -> None:
    """Paris winter time: a Monday 09:00 window asked on Saturday opens Monday 08:00 UTC."""
    schedule = parse_schedule(
        {"timezone": "Europe/Paris", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
    )
    saturday = datetime(2026, 10, 31, 12, tzinfo=UTC).timestamp()
    found = next_window_start(schedule, saturday)
    assert found == datetime(2026, 11, 2, 8, tzinfo=UTC).timestamp()
    assert not window_open(schedule, datetime(2026, 11, 2, 16, 0, tzinfo=UTC).timestamp())
    assert window_open(schedule, datetime(2026, 11, 2, 15, 59, tzinfo=UTC).timestamp())


def test_caps_and_no_window() -> None:
    """Cap arithmetic; an empty or inverted window never opens."""
    assert cap_left(None, 10) is None
    assert cap_left(5, 3) == 2
    assert cap_left(5, 9) == 0
    assert next_window_start(parse_schedule({"days": []}), 1.8e9) is None
    assert next_window_start(parse_schedule({"start": "10:00", "end": "09:00"}), 1.8e9) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"timezone": "Mars/Olympus"},
        {"timezone": "../etc/passwd"},
        {"timezone": 3},
        {"days": [7]},
        {"days": "mon"},
        {"start": "9:00"},
        {"end": "24:01"},
        {"min_gap_seconds": -1},
        {"jitter_seconds": True},
    ],
)
def test_bad_schedules(raw: dict[str, object]) -> None:
    """Unusable schedules are refused with ScheduleError, never a crash."""
    with pytest.raises(ScheduleError):
        parse_schedule(raw)


# --- variants -------------------------------------------------------------------------------

variant_lists = st.lists(
    st.fixed_dictionaries({"label": st.sampled_from("ABCDE"), "weight": st.integers(0, 10)}),
    min_size=1,
    max_size=5,
)


@given(st.text(max_size=30), st.integers(0, 10), variant_lists)
def test_pick_is_deterministic_and_weighted(
    lead: str, position: int, variants: list[dict[str, object]]
) -> None:
    """The same lead and step always get the same variant; a zero weight is never picked
    unless every weight is zero (then the first)."""
    chosen = pick(lead, position, variants)
    assert chosen is pick(lead, position, variants)
    if any(v["weight"] for v in variants):
        assert chosen["weight"] != 0
    else:
        assert chosen is variants[0]


def test_pick_follows_the_weights() -> None:
    """Over 10,000 leads a 1:3 split lands near 25 % / 75 %."""
    variants = [{"label": "A", "weight": 1}, {"label": "B", "weight": 3}]
    counts = Counter(pick(f"cld_{i}", 0, variants)["label"] for i in range(10_000))
    assert 2200 < counts["A"] < 2800
    assert pick("x", 0, variants) == pick("x", 0, variants)
    with pytest.raises(ValueError, match="without variants"):
        pick("x", 0, [])


# --- holds ----------------------------------------------------------------------------------

facts = st.builds(
    holds.Facts,
    failing_domains=st.lists(st.sampled_from(["a.test", "b.test"]), max_size=2).map(tuple),
    sends=st.integers(0, 1000),
    bounces=st.integers(0, 1000),
    sent_today=st.integers(0, 100),
    daily_cap=st.none() | st.integers(0, 100),
)


@given(facts)
def test_holds_follow_their_causes(f: holds.Facts) -> None:
    """Each hold is there exactly when its cause is (so clearing the cause lifts it)."""
    t = holds.Thresholds(bounce_rate=0.05, min_sends=50)
    codes = [h.code for h in holds.evaluate(f, t)]
    assert ("domain_dns_failing" in codes) == bool(f.failing_domains)
    assert ("bounce_rate" in codes) == (f.sends >= 50 and f.bounces > 0.05 * f.sends)
    assert ("daily_cap" in codes) == (f.daily_cap is not None and f.sent_today >= f.daily_cap)


def test_merge_keeps_since() -> None:
    """A hold still present keeps its start; a new one starts now; a cleared one goes."""
    current = [{"code": "daily_cap", "detail": "x", "since": 5.0}, {"code": "bounce_rate"}]
    merged = holds.merge(current, [holds.Hold("daily_cap", "d"), holds.Hold("x", "y")], 9.0)
    assert merged == [
        {"code": "daily_cap", "detail": "d", "since": 5.0},
        {"code": "x", "detail": "y", "since": 9.0},
    ]


# --- content --------------------------------------------------------------------------------


def test_render_inline_and_template() -> None:
    """Inline content and templates are rendered with the lead's values (HTML escaped)."""
    lead = {"first_name": "Ada <3", "company": "Acme", "email": "ada@x.test"}
    inline = {"label": "B", "subject": "Hi {{first_name}}\n", "text": "At {{company}}"}
    content = render_step(inline, lead)
    assert (content.variant, content.subject, content.text) == ("B", "Hi Ada <3", "At Acme")
    template = TemplateParts("For {{company}}", "t {{first_name}}", "<b>{{first_name}}</b>")
    content = render_step({"label": "A", "template_id": "tpl_1"}, lead, template)
    assert content.html == "<b>Ada &lt;3</b>"
    assert content.subject == "For Acme"


def test_render_refusals() -> None:
    """Missing variables, missing templates and empty variants are refused, naming why."""
    with pytest.raises(ContentError) as missing:
        render_step({"subject": "Hi {{first_name}}", "text": "{{title}}"}, {})
    assert missing.value.code == "missing_variables"
    assert "first_name" in missing.value.detail
    assert "title" in missing.value.detail
    with pytest.raises(ContentError) as absent:
        render_step({"template_id": "tpl_gone"}, {})
    assert absent.value.code == "template_not_found"
    with pytest.raises(ContentError) as empty:
        render_step({"subject": "Hi"}, {})
    assert empty.value.code == "no_content"
    assert render_step({"subject": "Hi {{x|there}}", "text": "t"}, {}).subject == "Hi there"


def test_unsubscribe_footer() -> None:
    """The link lands in both bodies, before ``</body>`` in HTML, escaped."""
    content = render_step({"subject": "s", "text": "t", "html": "<p>h</p></BODY>"}, {})
    out = with_unsubscribe(content, "https://x.test/u/a&b")
    assert out.text is not None
    assert out.text.endswith("Unsubscribe: https://x.test/u/a&b\n")
    assert out.html is not None
    assert out.html.endswith("</BODY>")
    assert 'href="https://x.test/u/a&amp;b"' in out.html
