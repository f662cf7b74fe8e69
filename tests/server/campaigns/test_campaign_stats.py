"""The campaign stats routes over a realistic stored state (campaign rows from the factory,
outbox messages, bounces, opens and clicks by people and machines, lead events), on SQLite and
PostgreSQL: every number is checked by hand, and the sums add up (variants to steps, steps plus
unattributed events to the campaign, campaigns to the aggregate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from factory import StepSpec, make_campaign
from keyed_helpers import Keyed

from server.campaigns.stats_store import timeline_id
from server.db.engine import Database
from server.db.models import (
    CampaignEvent,
    CampaignSend,
    MailBounce,
    MailEvent,
    MailLink,
    MailMessage,
)
from server.db.tx import write_transaction
from server.ids import new_id

DAY = 86400.0
JAN_10 = 1768003200.0  # 2026-01-10T00:00:00Z
MAR_01 = 1772323200.0  # 2026-03-01T00:00:00Z
PRICING = "https://acme.test/pricing"
DOCS = "https://acme.test/docs"

TWO_VARIANTS = (
    {"label": "A", "weight": 1, "subject": "Hi", "text": "a"},
    {"label": "B", "weight": 1, "subject": "Hello", "text": "b"},
)


@dataclass
class State:
    """What the scenario wrote: ids by name."""

    user_id: str
    headers: dict[str, str]
    first: str = ""
    second: str = ""
    leads: dict[str, str] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)


async def _message(db: Database, user_id: str, state: str, at: float, to: str) -> str:
    """An outbox row in ``state`` (as the worker leaves it)."""
    email_id = new_id("email", now=at)
    done = state in ("sent", "failed", "cancelled")
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            MailMessage.__table__.insert().values(
                id=email_id,
                user_id=user_id,
                state=state,
                from_address="ann@acme.test",
                domain="acme.test",
                envelope_from="bounces@acme.test",
                recipients=[to],
                headers_view={},
                subject="Hi",
                tags_key=",",
                message_id=f"<{email_id}@acme.test>",
                raw=b"x",
                size=1,
                scheduled_at=None,
                next_attempt_at=at,
                created_at=at,
                updated_at=at,
                handed_off_at=at + 1 if state in ("sending", "sent", "failed") else None,
                finished_at=at + 2 if done else None,
                lease_owner=None,
                lease_expires=None,
                attempt_token=None,
                attempts=1,
                relay_queue_id="Q1" if state == "sent" else None,
                relay_reply=None,
                error_code="relay_refused" if state == "failed" else None,
                error_message="refused" if state == "failed" else None,
                suppressed=None,
            )
        )
    return email_id


async def _send(
    db: Database,
    st: State,
    campaign_id: str,
    lead: str,
    position: int,
    variant: str,
    state: str,
    at: float,
) -> str:
    email_id = await _message(db, st.user_id, state, at, f"{lead}@lead.test")
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            CampaignSend.__table__.insert().values(
                lead_id=st.leads[lead],
                position=position,
                campaign_id=campaign_id,
                variant=variant,
                alias_id=None,
                email_id=email_id,
                queued_at=at,
            )
        )
    st.emails[f"{lead}/{position}"] = email_id
    return email_id


async def _rows(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    async with write_transaction(db.engine) as conn:
        await conn.execute(table.__table__.insert(), rows)


def _track(
    email_id: str, kind: str, actor: str, at: float, idx: int | None = None
) -> dict[str, Any]:
    return {
        "id": new_id("evt", now=at),
        "email_id": email_id,
        "kind": kind,
        "link_idx": idx,
        "actor": actor,
        "user_agent": "ua",
        "at": at,
    }


def _lead_event(
    campaign_id: str, lead_id: str, kind: str, at: float, email_id: str | None, position: int | None
) -> dict[str, Any]:
    return {
        "id": new_id("cev", now=at),
        "campaign_id": campaign_id,
        "lead_id": lead_id,
        "position": position,
        "kind": kind,
        "email_id": email_id,
        "detail": None,
        "at": at,
    }


def _bounce(user_id: str, email_id: str, kind: str, status: str, at: float) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "inbound_email_id": None,
        "sent_message_id": email_id,
        "recipient": "x@lead.test",
        "kind": kind,
        "status": status,
        "diagnostic": None,
        "created_at": at,
    }


async def _scenario(keyed: Keyed) -> State:
    """Two campaigns of one user (and one of another user, never counted)."""
    db = keyed.services.db
    user_id, headers = await keyed.user()
    st = State(user_id, headers)
    names = ["l0", "l1", "l2", "l3", "l4", "l5", "l6"]
    first = await make_campaign(
        db,
        user_id=user_id,
        name="First",
        status="active",
        steps=(StepSpec(variants=TWO_VARIANTS), StepSpec(delay_seconds=int(DAY))),
        leads=[{"email": f"{n}@lead.test"} for n in names],
        lead_status="active",
        now=JAN_10,
    )
    st.first = first.campaign_id
    st.leads.update(zip(names, first.lead_ids, strict=True))
    t = JAN_10 + 3600
    c1 = st.first
    # step 0: A for l0 l2 l4, B for l1 l3 l5
    l0 = await _send(db, st, c1, "l0", 0, "A", "sent", t)
    l1 = await _send(db, st, c1, "l1", 0, "B", "sent", t + 10)
    l2 = await _send(db, st, c1, "l2", 0, "A", "sent", t + 20)
    await _send(db, st, c1, "l3", 0, "B", "failed", t + 30)
    await _send(db, st, c1, "l4", 0, "A", "queued", t + 40)
    l5 = await _send(db, st, c1, "l5", 0, "B", "sent", t + 50)
    # step 1: only l2 got that far
    l2b = await _send(db, st, c1, "l2", 1, "A", "sent", t + DAY)
    await _rows(
        db,
        MailLink,
        [
            {"email_id": e, "idx": i, "url": url}
            for e in (l0, l5)
            for i, url in enumerate((PRICING, DOCS))
        ],
    )
    await _rows(
        db,
        MailEvent,
        [
            _track(l0, "open", "person", t + 100),
            _track(l0, "open", "person", t + 200),
            _track(l0, "click", "person", t + 210, 0),
            _track(l0, "click", "scanner", t + 5, 0),
            _track(l2, "open", "apple_privacy", t + 25),
            _track(l5, "open", "image_proxy", t + 300),
            _track(l5, "click", "person", t + 310, 1),
            _track(l2b, "open", "person", t + DAY + 100),
        ],
    )
    await _rows(
        db,
        MailBounce,
        [
            _bounce(user_id, l1, "hard", "5.1.1", t + 60),
            _bounce(user_id, l2, "soft", "4.4.1", t + 70),  # a delay, not a bounce
        ],
    )
    await _rows(
        db,
        CampaignEvent,
        [
            _lead_event(c1, st.leads["l0"], "replied", t + 400, l0, 0),
            _lead_event(c1, st.leads["l1"], "bounced", t + 60, l1, 0),
            # a reply naming the inbound message: attributed to the lead's last send before it
            _lead_event(c1, st.leads["l2"], "replied", t + DAY + 500, "inb_x", None),
            _lead_event(c1, st.leads["l5"], "unsubscribed", t + 320, None, 0),
            # no send at all: unattributed
            _lead_event(c1, st.leads["l6"], "unsubscribed", t + 330, None, None),
        ],
    )
    second = await make_campaign(
        db,
        user_id=user_id,
        name="Second",
        status="completed",
        leads=[{"email": "m0@lead.test"}, {"email": "m1@lead.test"}],
        lead_status="completed",
        now=MAR_01,
    )
    st.second = second.campaign_id
    st.leads.update(m0=second.lead_ids[0], m1=second.lead_ids[1])
    m0 = await _send(db, st, st.second, "m0", 0, "A", "sent", MAR_01 + 60)
    m1 = await _send(db, st, st.second, "m1", 0, "A", "sent", MAR_01 + 70)
    await _rows(db, MailEvent, [_track(m0, "open", "person", MAR_01 + 90)])
    await _rows(
        db,
        CampaignEvent,
        [_lead_event(st.second, st.leads["m1"], "unsubscribed", MAR_01 + 99, m1, 0)],
    )
    # another user's campaign with sends: never in this user's numbers
    other = await make_campaign(
        db, status="active", leads=[{"email": "z@lead.test"}], lead_status="active", now=JAN_10
    )
    stranger = State(other.user_id, {}, leads={"z": other.lead_ids[0]})
    await _send(db, stranger, other.campaign_id, "z", 0, "A", "sent", JAN_10 + 5)
    return st


FIELDS = (
    "scheduled",
    "queued",
    "in_flight",
    "sent",
    "delivered",
    "failed",
    "cancelled",
    "bounced",
    "hard_bounced",
    "deferred",
    "opened",
    "clicked",
    "replied",
    "unsubscribed",
    "opens",
    "machine_opens",
    "clicks",
    "machine_clicks",
)


def _numbers(view: dict[str, Any], **expected: int) -> dict[str, int]:
    """The view's counts; every field not named is expected 0."""
    got = {name: view[name] for name in FIELDS}
    assert got == {name: expected.get(name, 0) for name in FIELDS}
    return got


def _sum(views: list[dict[str, Any]]) -> dict[str, int]:
    return {name: sum(v[name] for v in views) for name in FIELDS}


async def test_the_numbers_of_a_realistic_campaign_add_up(keyed: Keyed) -> None:
    st = await _scenario(keyed)
    get = keyed.client.get
    stats = await get(f"/api/v1/campaigns/{st.first}/stats", headers=st.headers)
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert (body["campaign_id"], body["name"], body["status"]) == (st.first, "First", "active")
    _numbers(
        body,
        scheduled=7,
        queued=1,
        sent=5,
        delivered=4,
        failed=1,
        bounced=1,
        hard_bounced=1,
        deferred=1,
        opened=3,
        clicked=2,
        replied=2,
        unsubscribed=2,
        opens=4,
        machine_opens=1,
        clicks=2,
        machine_clicks=1,
    )
    assert body["rates"] == {
        "delivered_rate": 0.8,
        "bounce_rate": 0.2,
        "open_rate": 0.75,
        "click_rate": 0.5,
        "reply_rate": 0.5,
        "unsubscribe_rate": 0.5,
    }
    assert body["leads"] == {"active": 7, "total": 7}

    perf = await get(f"/api/v1/campaigns/{st.first}/stats/step-performance", headers=st.headers)
    assert perf.status_code == 200, perf.text
    doc = perf.json()
    step0, step1 = doc["steps"]
    assert [v["label"] for v in step0["variants"]] == ["A", "B"]
    a0, b0 = step0["variants"]
    _numbers(
        a0,
        scheduled=3,
        queued=1,
        sent=2,
        delivered=2,
        deferred=1,
        opened=1,
        clicked=1,
        replied=1,
        opens=2,
        machine_opens=1,
        clicks=1,
        machine_clicks=1,
    )
    _numbers(
        b0,
        scheduled=3,
        sent=2,
        delivered=1,
        failed=1,
        bounced=1,
        hard_bounced=1,
        opened=1,
        clicked=1,
        unsubscribed=1,
        opens=1,
        clicks=1,
    )
    assert [v["label"] for v in step1["variants"]] == ["A"]
    _numbers(step1["variants"][0], scheduled=1, sent=1, delivered=1, opened=1, replied=1, opens=1)
    _numbers(doc["unattributed"], unsubscribed=1)
    for step in doc["steps"]:  # variants add up to their step
        assert {n: step[n] for n in FIELDS} == _sum(step["variants"])
    # steps plus unattributed add up to the totals, and the totals are the stats route's
    assert {n: doc["totals"][n] for n in FIELDS} == _sum([*doc["steps"], doc["unattributed"]])
    assert {n: doc["totals"][n] for n in FIELDS} == {n: body[n] for n in FIELDS}
    assert step0["rates"]["bounce_rate"] == 0.25

    clicks = await get(f"/api/v1/campaigns/{st.first}/click-stats", headers=st.headers)
    assert clicks.status_code == 200, clicks.text
    assert clicks.json() == {
        "campaign_id": st.first,
        "data": [
            {"url": DOCS, "clicks": 1, "unique_clicks": 1, "machine_clicks": 0, "messages": 2},
            {"url": PRICING, "clicks": 1, "unique_clicks": 1, "machine_clicks": 1, "messages": 2},
        ],
        "clicks": 2,
        "machine_clicks": 1,
        "clicked": 2,
    }
    assert sum(link["clicks"] for link in clicks.json()["data"]) == body["clicks"]
    assert sum(link["machine_clicks"] for link in clicks.json()["data"]) == body["machine_clicks"]

    second = (await get(f"/api/v1/campaigns/{st.second}/stats", headers=st.headers)).json()
    _numbers(second, scheduled=2, sent=2, delivered=2, opened=1, unsubscribed=1, opens=1)
    agg = await get("/api/v1/campaigns/aggregate-stats", headers=st.headers)
    assert agg.status_code == 200, agg.text
    assert agg.json()["campaigns"] == 2
    assert {n: agg.json()[n] for n in FIELDS} == _sum([body, second])  # the stranger's not in it


async def test_aggregate_filters_by_status_and_creation_day(keyed: Keyed) -> None:
    st = await _scenario(keyed)

    async def agg(**params: str) -> dict[str, Any]:
        got = await keyed.client.get(
            "/api/v1/campaigns/aggregate-stats", params=params, headers=st.headers
        )
        assert got.status_code == 200, got.text
        document: dict[str, Any] = got.json()
        return document

    completed = await agg(status="completed")
    assert (completed["campaigns"], completed["sent"], completed["status"]) == (1, 2, "completed")
    assert (await agg(status="paused"))["campaigns"] == 0
    late = await agg(start_date="2026-02-01")
    assert (late["campaigns"], late["sent"], late["start_date"]) == (1, 2, "2026-02-01")
    early = await agg(end_date="2026-01-10")  # inclusive: the whole day
    assert (early["campaigns"], early["sent"]) == (1, 5)
    assert (await agg(start_date="2026-01-11", end_date="2026-02-28"))["campaigns"] == 0
    assert (await agg(start_date="2026-03-02", end_date="2026-01-01"))["campaigns"] == 0
    assert (await agg(end_date="9999-12-31"))["campaigns"] == 2
    for params in ({"status": "sending"}, {"start_date": "2026-13-01"}, {"end_date": "20260101"}):
        bad = await keyed.client.get(
            "/api/v1/campaigns/aggregate-stats", params=params, headers=st.headers
        )
        assert bad.status_code == 400, params
        assert bad.json()["error"]["code"] == "parameter_invalid"


async def test_a_leads_timeline_merges_every_source_in_order_and_pages(keyed: Keyed) -> None:
    st = await _scenario(keyed)
    path = f"/api/v1/campaigns/{st.first}/leads/{st.leads['l0']}/events"
    got = await keyed.client.get(path, headers=st.headers)
    assert got.status_code == 200, got.text
    events = got.json()["data"]
    assert [(e["kind"], e["detail"].get("actor")) for e in events] == [
        ("queued", None),
        ("sent", None),
        ("clicked", "scanner"),
        ("opened", "person"),
        ("opened", "person"),
        ("clicked", "person"),
        ("replied", None),
    ]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert events[2]["detail"] == {"actor": "scanner", "by_person": False, "url": PRICING}
    assert {e["email_id"] for e in events} == {st.emails["l0/0"]}
    assert events[0]["position"] == 0
    assert events[0]["variant"] == "A"
    assert events[0]["timestamp"].endswith("Z")
    assert got.json()["has_more"] is False
    # pages by cursor and by offset give the same entries
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await keyed.client.get(path, params=params, headers=st.headers)).json()
        paged += page["data"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert paged == events
    offset = (await keyed.client.get(path, params={"offset": "5"}, headers=st.headers)).json()
    assert offset["data"] == events[5:]
    # a bounced lead and a deferred one
    l1 = (
        await keyed.client.get(
            f"/api/v1/campaigns/{st.first}/leads/{st.leads['l1']}/events", headers=st.headers
        )
    ).json()["data"]
    assert [e["kind"] for e in l1] == ["queued", "sent", "bounced", "bounced"]
    assert l1[2]["detail"] == {"bounce_kind": "hard", "status": "5.1.1"}
    l2 = (
        await keyed.client.get(
            f"/api/v1/campaigns/{st.first}/leads/{st.leads['l2']}/events", headers=st.headers
        )
    ).json()["data"]
    assert [e["kind"] for e in l2] == [
        "queued",
        "sent",
        "opened",
        "deferred",
        "queued",
        "sent",
        "opened",
        "replied",
    ]
    assert l2[2]["detail"]["by_person"] is False
    failed = (
        await keyed.client.get(
            f"/api/v1/campaigns/{st.first}/leads/{st.leads['l3']}/events", headers=st.headers
        )
    ).json()["data"]
    assert [(e["kind"], e["detail"]) for e in failed] == [
        ("queued", {"subject": "Hi"}),
        ("failed", {"error_code": "relay_refused"}),
    ]


async def test_other_users_and_wrong_ids_are_404(keyed: Keyed) -> None:
    st = await _scenario(keyed)
    _, bob = await keyed.user()
    lead = st.leads["l0"]
    paths = [
        f"/api/v1/campaigns/{st.first}/stats",
        f"/api/v1/campaigns/{st.first}/stats/step-performance",
        f"/api/v1/campaigns/{st.first}/click-stats",
        f"/api/v1/campaigns/{st.first}/leads/{lead}/events",
    ]
    for path in paths:
        denied = await keyed.client.get(path, headers=bob)
        assert denied.status_code == 404, path
        assert denied.json()["error"]["code"] == "campaign_not_found"
    # a lead of another campaign, a malformed lead id, a malformed campaign id
    other_lead = f"/api/v1/campaigns/{st.second}/leads/{lead}/events"
    for path, code in (
        (other_lead, "campaign_lead_not_found"),
        (f"/api/v1/campaigns/{st.first}/leads/nope/events", "campaign_lead_not_found"),
        ("/api/v1/campaigns/cmp_bad/stats", "campaign_not_found"),
    ):
        missing = await keyed.client.get(path, headers=st.headers)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["code"] == code
    bad_cursor = await keyed.client.get(
        f"/api/v1/campaigns/{st.first}/leads/{lead}/events",
        params={"cursor": "garbage"},
        headers=st.headers,
    )
    assert bad_cursor.status_code == 400
    # bob's aggregate is empty
    empty = (await keyed.client.get("/api/v1/campaigns/aggregate-stats", headers=bob)).json()
    assert empty["campaigns"] == 0
    assert empty["sent"] == 0
    assert empty["rates"]["open_rate"] == 0.0


async def test_a_campaign_without_sends_shows_its_steps_with_zeros(keyed: Keyed) -> None:
    user_id, headers = await keyed.user()
    made = await make_campaign(
        keyed.services.db,
        user_id=user_id,
        steps=(StepSpec(variants=TWO_VARIANTS), StepSpec()),
    )
    doc = (
        await keyed.client.get(
            f"/api/v1/campaigns/{made.campaign_id}/stats/step-performance", headers=headers
        )
    ).json()
    assert [(s["position"], [v["label"] for v in s["variants"]]) for s in doc["steps"]] == [
        (0, ["A", "B"]),
        (1, ["A"]),
    ]
    assert all(s["sent"] == 0 and s["rates"]["open_rate"] == 0.0 for s in doc["steps"])
    stats = await keyed.client.get(f"/api/v1/campaigns/{made.campaign_id}/stats", headers=headers)
    assert stats.json()["scheduled"] == 0
    assert stats.json()["leads"] == {"total": 0}


async def test_a_key_needs_the_campaigns_scope(keyed: Keyed) -> None:
    _, session = await keyed.user()
    other = await keyed.key(session, ["templates:read"])
    refused = await keyed.client.get("/api/v1/campaigns/aggregate-stats", headers=other)
    assert refused.status_code == 403
    reader = await keyed.key(session, ["campaigns:read"])
    allowed = await keyed.client.get("/api/v1/campaigns/aggregate-stats", headers=reader)
    assert allowed.status_code == 200


def test_timeline_ids_sort_by_time_then_kind() -> None:
    early = timeline_id(100.0, "clicked", "a")
    late = timeline_id(100.5, "queued", "b")
    assert early < late
    assert timeline_id(100.0, "queued", "z") < timeline_id(100.0, "sent", "a")
    assert timeline_id(100.0, "queued", "z") == timeline_id(100.0, "queued", "z")
    assert timeline_id(-5.0, "queued", "z").startswith("tle_")
