"""The sequencer on SQLite and PostgreSQL with an injected clock: steps go out in order with
their delays, threaded, signed, with an unsubscribe link and RFC 8058 headers; suppression
stops a lead; approval parks a lead until its draft is approved; caps, windows, gaps and holds
hold sends back and release them; the campaign completes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from email import message_from_bytes, policy
from typing import Any

import dkim
import pytest
import sqlalchemy as sa
from factory import StepSpec, make_user
from mail_support import dkim_dns
from sequencer_support import (
    BASE_URL,
    KEY,
    Clock,
    launched,
    make_aliases,
    sequencer,
    set_domain_status,
)

from server.campaigns.holds import Thresholds
from server.campaigns.unsubscribe import read_unsubscribe_token
from server.db.engine import Database
from server.db.models import (
    Campaign,
    CampaignDraft,
    CampaignEvent,
    CampaignLead,
    CampaignSend,
    MailBounce,
    MailMessage,
)
from server.db.tx import write_transaction
from server.mail.outbox_rules import DailyCaps
from server.suppression.store import SuppressionStore

THREE_STEPS = (
    StepSpec(0, ({"label": "A", "weight": 1, "subject": "Hi {{name}}", "text": "One {{name}}"},)),
    StepSpec(
        86400,
        (
            {"label": "A", "weight": 1, "subject": "Again", "text": "Two"},
            {"label": "B", "weight": 1, "subject": "Again B", "html": "<p>Two B</p>"},
        ),
    ),
    StepSpec(2 * 86400, ({"label": "A", "weight": 1, "subject": "Last", "text": "Three"},)),
)


def _leads(n: int) -> list[dict[str, Any]]:
    return [{"email": f"lead{i}@dest.test", "name": f"Lead {i}"} for i in range(n)]


async def _rows(db: Database, table: Any, *where: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(sa.select(table).where(*where))).mappings().all())


async def _launch(db: Database, clock: Clock, **kwargs: Any) -> Any:
    """An active campaign as camp-api's launch leaves it (leads active, due now)."""
    user = kwargs.pop("user_id", None) or await make_user(db)
    kwargs.setdefault("steps", THREE_STEPS)
    kwargs.setdefault("leads", _leads(5))
    return await launched(db, clock, user, **kwargs)


async def test_three_steps_threaded_signed_and_complete(db: Database) -> None:
    """Each step goes once, after its delay; later steps reply in the first one's thread;
    every message is DKIM-signed and carries the unsubscribe link and one-click headers."""
    clock = Clock()
    ids = await _launch(db, clock)
    seq = sequencer(db, clock)
    first = await seq.tick()
    assert (first.queued, first.decisions) == (5, 5)
    assert (await seq.tick()).queued == 0  # nothing due before the delay
    clock.advance(86399)
    assert (await seq.tick()).queued == 0
    clock.advance(1)
    assert (await seq.tick()).queued == 5
    clock.advance(2 * 86400)
    last = await seq.tick()
    assert last.queued == 5
    assert last.completed == 1
    sends = await _rows(db, CampaignSend)
    assert sorted((s["lead_id"], s["position"]) for s in sends) == sorted(
        (lead, k) for lead in ids.lead_ids for k in range(3)
    )
    leads = await _rows(db, CampaignLead)
    assert {lead["status"] for lead in leads} == {"completed"}
    assert all(lead["due_at"] is None and lead["next_position"] == 3 for lead in leads)
    campaign = (await _rows(db, Campaign))[0]
    assert campaign["status"] == "completed"
    assert campaign["finished_at"] == clock.now
    messages = {m["id"]: m for m in await _rows(db, MailMessage)}
    assert len(messages) == 15
    by_lead: dict[str, list[Any]] = {}
    for send in sorted(sends, key=lambda s: s["position"]):
        by_lead.setdefault(send["lead_id"], []).append(messages[send["email_id"]])
    for lead in leads:
        chain = by_lead[lead["id"]]
        assert lead["thread_message_id"] == chain[0]["message_id"]
        for k, row in enumerate(chain):
            raw = bytes(row["raw"])
            assert row["envelope_from"] == "bounces@acme.test"  # reports reach the bounce pipeline
            assert dkim.verify(raw, dnsfunc=dkim_dns)
            msg = message_from_bytes(raw, policy=policy.default)
            url = msg["List-Unsubscribe"].strip("<>")
            assert url.startswith(f"{BASE_URL}/u/")
            assert read_unsubscribe_token(KEY, url.rsplit("/", 1)[1]) == lead["id"]
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            body = msg.get_body(("plain", "html"))
            assert body is not None
            assert url in body.get_content()
            assert msg["To"] == lead["email"]
            if k == 0:
                assert msg["In-Reply-To"] is None
                assert msg["Subject"] == f"Hi {lead['data']['name']}"
            else:
                assert msg["In-Reply-To"] == chain[0]["message_id"]
                assert msg["References"] == chain[0]["message_id"]


async def test_variants_are_deterministic(db: Database) -> None:
    """The step-2 variant recorded per send is the pure pick for (lead, step)."""
    from server.campaigns.variants import pick

    clock = Clock()
    ids = await _launch(db, clock, leads=_leads(30))
    seq = sequencer(db, clock)
    await seq.tick()
    clock.advance(86400)
    await seq.tick()
    sends = await _rows(db, CampaignSend, CampaignSend.position == 1)
    assert len(sends) == 30
    for send in sends:
        assert send["variant"] == pick(send["lead_id"], 1, THREE_STEPS[1].variants)["label"]
    assert {s["variant"] for s in sends} == {"A", "B"}
    assert ids.lead_ids


async def test_suppressed_and_unsubscribed_leads_stop_at_send_time(db: Database) -> None:
    """A lead whose address is on the suppression list when its step is due is stopped
    ``suppressed`` with an event, and nothing is sent to it."""
    clock = Clock()
    ids = await _launch(db, clock)
    await SuppressionStore(db.engine).add(
        ids.user_id, "email", "lead1@dest.test", reason="test", source="manual"
    )
    seq = sequencer(db, clock)
    report = await seq.tick()
    assert (report.queued, report.stopped) == (4, 1)
    lead = (await _rows(db, CampaignLead, CampaignLead.email == "lead1@dest.test"))[0]
    assert (lead["status"], lead["stop_reason"], lead["due_at"]) == ("stopped", "suppressed", None)
    events = await _rows(db, CampaignEvent)
    assert [(e["lead_id"], e["kind"]) for e in events] == [(lead["id"], "suppressed")]
    assert not await _rows(db, CampaignSend, CampaignSend.lead_id == lead["id"])
    assert (await seq.tick()).stopped == 0  # recorded once


async def test_approval_parks_then_sends_the_approved_draft(db: Database) -> None:
    """With approval required the step is rendered into a draft and the lead waits; once
    approved, exactly the draft's subject and text go out."""
    clock = Clock()
    ids = await _launch(db, clock, leads=_leads(2), requires_approval=True)
    seq = sequencer(db, clock)
    report = await seq.tick()
    assert (report.queued, report.parked) == (0, 2)
    drafts = await _rows(db, CampaignDraft)
    assert {d["state"] for d in drafts} == {"draft"}
    assert len(drafts) == 2
    assert {lead["status"] for lead in await _rows(db, CampaignLead)} == {"waiting_approval"}
    assert (await seq.tick()).queued == 0
    target = ids.lead_ids[0]
    async with write_transaction(db.engine) as conn:  # what camp-api's approve does
        await conn.execute(
            sa.update(CampaignDraft)
            .where(CampaignDraft.lead_id == target)
            .values(state="approved", subject="Edited subject", text="Edited body")
        )
        await conn.execute(
            sa.update(CampaignLead)
            .where(CampaignLead.id == target)
            .values(status="active", due_at=clock.now)
        )
    assert (await seq.tick()).queued == 1
    (message,) = await _rows(db, MailMessage)
    msg = message_from_bytes(bytes(message["raw"]), policy=policy.default)
    assert msg["Subject"] == "Edited subject"
    body = msg.get_body(("plain",))
    assert body is not None
    assert body.get_content().startswith("Edited body")


async def test_daily_caps_hold_and_release_next_local_day(db: Database) -> None:
    """A campaign cap of 2 a day: two go, the campaign is held ``daily_cap``, and the hold
    lifts on the next local day (Paris), when two more go."""
    clock = Clock()
    schedule = {"timezone": "Europe/Paris", "days": list(range(7)), "start": "00:00"}
    schedule["end"] = "24:00"
    await _launch(db, clock, steps=THREE_STEPS[:1], daily_cap=2, schedule=schedule)
    seq = sequencer(db, clock)
    assert (await seq.tick()).queued == 2
    report = await seq.tick()
    assert (report.queued, report.held) == (0, 1)
    held = (await _rows(db, Campaign))[0]
    assert [h["code"] for h in held["holds"]] == ["daily_cap"]
    assert held["status"] == "active"
    clock.advance(11 * 3600)  # 23:00 UTC = 00:00 Paris next day
    assert (await seq.tick()).queued == 2
    assert (await _rows(db, Campaign))[0]["holds"] == []


async def test_alias_cap_gap_and_spread(db: Database) -> None:
    """Two aliases with a 10-minute gap: each sends once per gap, new leads spread over both
    and stay with their alias; an alias cap of 2 stops an alias for the day."""
    clock = Clock()
    user = await make_user(db)
    aliases = await make_aliases(db, user, locals_=("a", "b"))
    schedule = {"timezone": "UTC", "min_gap_seconds": 600}
    await _launch(
        db,
        clock,
        user_id=user,
        aliases=aliases,
        steps=THREE_STEPS[:2],
        schedule=schedule,
        alias_daily_cap=2,
    )
    seq = sequencer(db, clock)
    assert (await seq.tick()).queued == 2
    assert (await seq.tick()).queued == 0
    clock.advance(599)
    assert (await seq.tick()).queued == 0
    clock.advance(1)
    assert (await seq.tick()).queued == 2
    clock.advance(600)
    assert (await seq.tick()).queued == 0  # both aliases at their cap of 2
    sends = await _rows(db, CampaignSend)
    assert sorted(s["alias_id"] for s in sends) == sorted(aliases * 2)
    clock.advance(86400)
    assert (await seq.tick()).queued == 2
    for lead in await _rows(db, CampaignLead):
        mine = {
            s["alias_id"] for s in await _rows(db, CampaignSend, CampaignSend.lead_id == lead["id"])
        }
        assert len(mine) <= 1
        assert not mine or lead["alias_id"] in mine


async def test_sending_window(db: Database) -> None:
    """Outside the window (weekdays 09:00-17:00 New York) nothing goes; inside it does."""
    clock = Clock()  # Monday 12:00 UTC = 07:00 in New York
    schedule = {"timezone": "America/New_York", "days": [0, 1, 2, 3, 4]}
    schedule.update(start="09:00", end="17:00")
    await _launch(db, clock, steps=THREE_STEPS[:1], schedule=schedule)
    seq = sequencer(db, clock)
    assert (await seq.tick()).queued == 0
    clock.advance(2 * 3600)
    assert (await seq.tick()).queued == 5


async def test_holds_for_dns_and_bounce_rate_lift_when_cleared(db: Database) -> None:
    """A sending domain failing its checks holds the campaign until verified again; a bounce
    rate over the threshold (after the minimum sends) holds it until the rate falls."""
    clock = Clock()
    ids = await _launch(db, clock, steps=(StepSpec(), StepSpec(60)), leads=_leads(4))
    seq = sequencer(db, clock, thresholds=Thresholds(bounce_rate=0.3, min_sends=4))
    await set_domain_status(db, "acme.test", "pending")
    assert (await seq.tick()).held == 1
    assert [h["code"] for h in (await _rows(db, Campaign))[0]["holds"]] == ["domain_dns_failing"]
    await set_domain_status(db, "acme.test", "verified")
    assert (await seq.tick()).queued == 4
    sends = await _rows(db, CampaignSend)
    async with write_transaction(db.engine) as conn:
        for send in sends[:2]:
            await conn.execute(
                sa.insert(MailBounce).values(
                    user_id=ids.user_id,
                    inbound_email_id=None,
                    sent_message_id=send["email_id"],
                    recipient="x@dest.test",
                    kind="hard",
                    status="5.1.1",
                    diagnostic=None,
                    created_at=clock.now,
                )
            )
    clock.advance(60)
    report = await seq.tick()
    assert (report.held, report.queued) == (1, 0)
    assert [h["code"] for h in (await _rows(db, Campaign))[0]["holds"]] == ["bounce_rate"]
    seq.thresholds = Thresholds(bounce_rate=0.6, min_sends=4)
    assert (await seq.tick()).queued == 4


async def test_bad_content_fails_the_lead(db: Database) -> None:
    """A step whose variables the lead lacks fails that lead with a ``failed`` event (and a
    campaign with no lead left running completes)."""
    clock = Clock()
    steps = (StepSpec(0, ({"label": "A", "subject": "Hi {{title}}", "text": "x"},)),)
    await _launch(db, clock, steps=steps, leads=_leads(1))
    report = await sequencer(db, clock).tick()
    assert (report.failed, report.queued, report.completed) == (1, 0, 1)  # nobody left
    (lead,) = await _rows(db, CampaignLead)
    assert lead["status"] == "failed"
    (event,) = await _rows(db, CampaignEvent)
    assert event["kind"] == "failed"
    assert event["detail"]["code"] == "missing_variables"


async def test_paused_campaign_does_not_send(db: Database) -> None:
    """Only active campaigns send; pausing leaves due leads untouched."""
    clock = Clock()
    ids = await _launch(db, clock)
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            sa.update(Campaign).where(Campaign.id == ids.campaign_id).values(status="paused")
        )
    assert (await sequencer(db, clock).tick()).queued == 0
    assert {lead["due_at"] for lead in await _rows(db, CampaignLead)} == {clock.now}


async def test_unusable_schedule_sends_nothing(db: Database) -> None:
    """A stored schedule the sequencer cannot read (unknown zone) holds every send back."""
    clock = Clock()
    await _launch(db, clock, schedule={"timezone": "Mars/Olympus"})
    report = await sequencer(db, clock).tick()
    assert (report.queued, report.decisions) == (0, 0)
    assert {lead["status"] for lead in await _rows(db, CampaignLead)} == {"active"}


async def test_envelope_from_must_be_on_the_sending_domain(db: Database) -> None:
    """MailService.prepare refuses a return path off the From address's domain."""
    from mail_support import identities

    from server.mail.message import Draft, MessageError
    from server.mail.outbox import Outbox
    from server.mail.service import MailService

    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    draft = Draft(from_="sales@acme.test", to=["x@dest.test"], subject="s", text="t")
    with pytest.raises(MessageError) as refused:
        await mail.prepare("usr_x", draft, envelope_from="bounces@other.test")
    assert refused.value.field == "envelope_from"
    prepared = await mail.prepare("usr_x", draft, envelope_from="bounces@acme.test")
    assert prepared.row["envelope_from"] == "bounces@acme.test"
    assert prepared.row["from_address"] == "sales@acme.test"


async def test_the_loop_runs_ticks_until_stopped(db: Database) -> None:
    """SequencerLoop ticks in the background and stops when its context exits; the
    deployment wiring only starts it with an https public URL."""
    import asyncio

    from server.campaigns.sequencer import SequencerLoop, sequencer_loop
    from server.services import Services
    from server.settings import load_settings

    clock = Clock()
    await _launch(db, clock, steps=THREE_STEPS[:1])
    async with SequencerLoop(sequencer(db, clock), poll_seconds=0.01):
        for _ in range(2000):  # a hang guard: each pass yields to the loop's ticks
            if len(await _rows(db, CampaignSend)) == 5:
                break
            await asyncio.sleep(0.01)
    assert len(await _rows(db, CampaignSend)) == 5
    plain = load_settings(env_file=None, database_url="sqlite+aiosqlite:///:memory:")
    assert sequencer_loop(Services.build(plain)) is None
    http = plain.model_copy(update={"public_url": "http://bavlio.test"})
    assert sequencer_loop(Services.build(http)) is None
    off = plain.model_copy(update={"public_url": BASE_URL, "campaign_sequencer": False})
    assert sequencer_loop(Services.build(off)) is None
    tuned = plain.model_copy(
        update={
            "public_url": BASE_URL,
            "campaign_hold_bounce_rate": 0.2,
            "campaign_hold_min_sends": 7,
        }
    )
    loop = sequencer_loop(Services.build(tuned))
    assert loop is not None
    assert loop.sequencer.thresholds == Thresholds(bounce_rate=0.2, min_sends=7)


async def test_template_variants_and_a_deleted_template(db: Database) -> None:
    """A variant naming a stored template renders it for the lead; one naming a template
    that is gone (or another user's) fails the lead with ``template_not_found``."""
    from server.templates.store import TemplateStore

    clock = Clock()
    user = await make_user(db)
    template = await TemplateStore(db.engine).create(
        user, name="t", subject="For {{name}}", body_text="Body {{name}}", body_html=None
    )
    steps = (StepSpec(0, ({"label": "T", "template_id": template.id},)),)
    aliases = await make_aliases(db, user)
    ids = await _launch(db, clock, user_id=user, aliases=aliases, steps=steps, leads=_leads(1))
    other = await make_user(db)
    theirs = await TemplateStore(db.engine).create(
        other, name="x", subject="x", body_text="x", body_html=None
    )
    gone = (StepSpec(0, ({"label": "T", "template_id": theirs.id},)),)
    await _launch(
        db, clock, user_id=user, aliases=aliases, steps=gone, leads=[{"email": "z@dest.test"}]
    )
    report = await sequencer(db, clock).tick()
    assert (report.queued, report.failed) == (1, 1)
    (send,) = await _rows(db, CampaignSend)
    assert (send["lead_id"], send["variant"]) == (ids.lead_ids[0], "T")
    (message,) = await _rows(db, MailMessage)
    assert message["subject"] == "For Lead 0"
    (event,) = await _rows(db, CampaignEvent)
    assert event["detail"]["code"] == "template_not_found"


async def test_mail_daily_caps_hold_within_one_claim_group(db: Database) -> None:
    """The mail platform's alias cap of 2 with five leads due in one tick: the tick builds all
    five before its group is inserted, yet only two are queued; the other three stay due."""
    clock = Clock()
    await _launch(db, clock, steps=THREE_STEPS[:1])
    seq = sequencer(db, clock)
    seq.mail.caps = DailyCaps(per_alias=2)
    report = await seq.tick()
    assert (report.queued, report.lost) == (2, 3)
    assert len(await _rows(db, MailMessage)) == 2
    leads = await _rows(db, CampaignLead)
    assert sorted(lead["next_position"] for lead in leads) == [0, 0, 0, 1, 1]
    assert {lead["status"] for lead in leads if lead["next_position"] == 0} == {"active"}
    assert (await seq.tick()).queued == 0  # still capped today


@pytest.mark.parametrize("cap", ["daily_cap", "alias_daily_cap"])
async def test_two_sequencers_keep_the_campaign_caps(db: Database, cap: str) -> None:
    """Sequencer B reads today's sends (none), then A's whole tick runs (three sent, the cap),
    then B goes on with what it read: B's claims are refused, the cap of 3 holds exactly."""
    clock = Clock()
    await _launch(db, clock, steps=THREE_STEPS[:1], leads=_leads(8), **{cap: 3})
    first, second = sequencer(db, clock), sequencer(db, clock)
    counted, first_done = asyncio.Event(), asyncio.Event()
    stale_counts, stale_usage = second.store.campaign_counts, second.store.alias_usage

    async def counts_then_wait(campaign_id: str, since: float) -> tuple[int, int, int]:
        found = await stale_counts(campaign_id, since)
        counted.set()
        await first_done.wait()
        return found

    async def usage_read_before(ids: Sequence[str], since: float) -> Any:
        return {a: (0, None) for a in ids} if first_done.is_set() else await stale_usage(ids, since)

    second.store.campaign_counts = counts_then_wait  # type: ignore[method-assign]
    second.store.alias_usage = usage_read_before  # type: ignore[method-assign]
    racing = asyncio.create_task(second.tick())
    await counted.wait()
    assert (await first.tick()).queued == 3
    first_done.set()
    late = await racing
    assert late.queued == 0
    assert len(await _rows(db, CampaignSend)) == 3
    assert len(await _rows(db, MailMessage)) == 3
