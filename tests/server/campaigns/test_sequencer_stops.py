"""Stops on SQLite and PostgreSQL through inbound mail as deployed (InboundMail.build with
campaign stops plugged in): a reply in a lead's thread stops it ``replied``, an out-of-office
does not, a hard-bounce DSN stops it ``bounced``; and the public one-click unsubscribe endpoint
(GET shows, POST unsubscribes)."""

from __future__ import annotations

import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import serving
from factory import StepSpec
from inbound_mail.inbound_helpers import dsn, message
from sequencer_support import BASE_URL, Clock, launched, sequencer

from server.app import create_app
from server.auth.store import AccountStore
from server.campaigns.sequencer import Sequencer
from server.campaigns.stops import with_campaign_stops
from server.db.engine import Database
from server.db.models import CampaignEvent, CampaignLead, CampaignSend, InboundEmail, MailMessage
from server.mail.inbound_service import InboundMail
from server.mail.inbound_smtp import BOUNCE, Route
from server.settings import Settings
from server.suppression.store import SuppressionStore

STEPS = (StepSpec(0), StepSpec(3600), StepSpec(3600))


async def _rows(db: Database, table: Any, *where: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(sa.select(table).where(*where))).mappings().all())


async def _user(db: Database) -> str:
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        "stops", email=None, plan="paid"
    )
    return user.id


async def _started(db: Database, clock: Clock, user: str, leads: int, **kw: Any) -> Any:
    return await launched(
        db,
        clock,
        user,
        steps=STEPS,
        leads=[{"email": f"p{i}@dest.test"} for i in range(leads)],
        **kw,
    )


async def _sent(db: Database, lead_id: str) -> Any:
    (send,) = await _rows(db, CampaignSend, CampaignSend.lead_id == lead_id)
    (row,) = await _rows(db, MailMessage, MailMessage.id == send["email_id"])
    return row


async def test_replies_and_bounces_stop_leads(
    db: Database, backend_settings: Settings, tmp_path: Path
) -> None:
    """Lead 0 replies, lead 1 answers with an out-of-office, lead 2 hard-bounces: only 0 and
    2 stop, with a ``replied`` event (the inbound email) and a ``bounced`` one (the sent
    message); the next step goes to leads 1 and 3 only."""
    clock = Clock()
    user = await _user(db)
    ids = await _started(db, clock, user, 4)
    seq = sequencer(db, clock)
    assert (await seq.tick()).queued == 4
    handler = _inbound(backend_settings, tmp_path, db).handler()
    to = Route("sales@acme.test", user)
    lead0, lead1, lead2, lead3 = ids.lead_ids
    reply = message(
        sender="p0@dest.test",
        to="sales@acme.test",
        subject="Re: Hi",
        message_id="<reply0@dest.test>",
        in_reply_to=(await _sent(db, lead0))["message_id"],
    )
    assert (await handler.deliver("p0@dest.test", [to], reply)).startswith("250")
    ooo = message(
        sender="p1@dest.test",
        to="sales@acme.test",
        subject="Out of office: back Monday",
        message_id="<ooo1@dest.test>",
        in_reply_to=(await _sent(db, lead1))["message_id"],
    )
    ooo = ooo.replace(b"Subject:", b"Auto-Submitted: auto-replied\nSubject:", 1)
    assert (await handler.deliver("p1@dest.test", [to], ooo)).startswith("250")
    bounced = await _sent(db, lead2)
    report = dsn(bounced["message_id"].strip("<>"), [("p2@dest.test", "failed", "5.1.1")])
    bounce_to = Route("bounces@acme.test", BOUNCE)
    assert (await handler.deliver("", [bounce_to], report)).startswith("250")

    leads = {row["id"]: row for row in await _rows(db, CampaignLead)}
    assert (leads[lead0]["status"], leads[lead0]["stop_reason"]) == ("stopped", "replied")
    assert leads[lead0]["due_at"] is None
    assert leads[lead1]["status"] == "active"
    assert (leads[lead2]["status"], leads[lead2]["stop_reason"]) == ("stopped", "bounced")
    events = {(e["lead_id"], e["kind"]): e for e in await _rows(db, CampaignEvent)}
    assert set(events) == {(lead0, "replied"), (lead2, "bounced")}
    (inbound_reply,) = await _rows(db, InboundEmail, InboundEmail.message_id == "reply0@dest.test")
    assert events[(lead0, "replied")]["email_id"] == inbound_reply["id"]
    assert events[(lead2, "bounced")]["email_id"] == bounced["id"]
    found = await SuppressionStore(db.engine).is_suppressed(user, ["p2@dest.test"])
    assert found["p2@dest.test"] is not None  # the hard bounce still reached suppression

    clock.advance(3600)
    assert (await seq.tick()).queued == 2
    sends = await _rows(db, CampaignSend, CampaignSend.position == 1)
    assert {s["lead_id"] for s in sends} == {lead1, lead3}
    # A reply quoting only a later step's Message-ID still finds lead 3.
    (second,) = [s for s in sends if s["lead_id"] == lead3]
    (row,) = await _rows(db, MailMessage, MailMessage.id == second["email_id"])
    late = message(
        sender="p3@dest.test",
        to="sales@acme.test",
        subject="Re: Again",
        message_id="<reply3@dest.test>",
        in_reply_to=row["message_id"],
    )
    assert (await handler.deliver("p3@dest.test", [to], late)).startswith("250")
    (lead,) = await _rows(db, CampaignLead, CampaignLead.id == lead3)
    assert lead["stop_reason"] == "replied"


async def test_reply_without_stop_on_reply_is_only_recorded(
    db: Database, backend_settings: Settings, tmp_path: Path
) -> None:
    """A campaign that does not stop on reply records the reply and keeps sending."""
    clock = Clock()
    user = await _user(db)
    ids = await _started(db, clock, user, 1, stop_on_reply=False)
    await sequencer(db, clock).tick()
    handler = _inbound(backend_settings, tmp_path, db).handler()
    reply = message(
        sender="p0@dest.test",
        to="sales@acme.test",
        message_id="<r@dest.test>",
        in_reply_to=(await _sent(db, ids.lead_ids[0]))["message_id"],
    )
    assert (
        await handler.deliver("p0@dest.test", [Route("sales@acme.test", user)], reply)
    ).startswith("250")
    (lead,) = await _rows(db, CampaignLead)
    assert lead["status"] == "active"
    assert [e["kind"] for e in await _rows(db, CampaignEvent)] == ["replied"]


def _inbound(settings: Settings, tmp_path: Path, db: Database) -> InboundMail:
    built = InboundMail.build(settings.model_copy(update={"mail_storage_dir": tmp_path}), db.engine)
    return with_campaign_stops(built)


async def test_one_click_unsubscribe(settings: Settings, stub_resolver: Any) -> None:
    """GET shows a page and changes nothing; POST (RFC 8058 body) suppresses the address,
    stops the lead and records one ``unsubscribed`` event; repeats are harmless; a forged
    token is a 404 in the error envelope; the lead gets nothing more."""
    app = create_app(settings.model_copy(update={"public_url": BASE_URL}), resolver=stub_resolver)
    async with serving(app) as client:
        svc = app.state.services
        db: Database = svc.db
        clock = Clock()
        user = await _user(db)
        ids = await _started(db, clock, user, 2)
        seq = sequencer(db, clock)
        seq = Sequencer(db, seq.mail, base_url=BASE_URL, key=svc.keyed.tracking_key, clock=clock)
        assert (await seq.tick()).queued == 2
        sent = await _sent(db, ids.lead_ids[0])
        msg = message_from_bytes(bytes(sent["raw"]), policy=policy.default)
        path = msg["List-Unsubscribe"].strip("<>").removeprefix(BASE_URL)
        page = await client.get(path)
        assert page.status_code == 200
        assert 'method="post"' in page.text
        assert (await _rows(db, CampaignLead, CampaignLead.id == ids.lead_ids[0]))[0][
            "status"
        ] == "active"
        for _ in range(2):
            done = await client.post(
                path,
                content=b"List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert done.status_code == 200
        (lead,) = await _rows(db, CampaignLead, CampaignLead.id == ids.lead_ids[0])
        assert (lead["status"], lead["stop_reason"]) == ("stopped", "unsubscribed")
        (event,) = await _rows(db, CampaignEvent)
        assert (event["kind"], event["email_id"]) == ("unsubscribed", sent["id"])
        entry = (await SuppressionStore(db.engine).is_suppressed(user, ["p0@dest.test"]))[
            "p0@dest.test"
        ]
        assert entry is not None
        assert entry.source == "unsubscribe"
        forged = await client.post(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"))
        assert forged.status_code == 404
        assert forged.json()["error"]["code"] == "unsubscribe_link_not_found"
        assert (await client.get("/u/x")).status_code == 404
        clock.advance(3600)
        assert (await seq.tick()).queued == 1  # only the other lead
        assert isinstance(client, httpx.AsyncClient)


async def test_serve_runs_the_sequencer_beside_its_mail_worker(
    settings: Settings, stub_resolver: Any
) -> None:
    """``bavlio serve`` with an embedded mail worker and an https public URL runs the
    sequencer in its lifespan: a launched campaign's first step reaches the outbox."""
    import asyncio

    from mail_support import install

    configured = settings.model_copy(
        update={
            "public_url": BASE_URL,
            "mail_relay_host": "127.0.0.1",
            "mail_relay_port": 2,  # nothing listens: messages stay queued, which is enough
            "embedded_mail_worker": True,
            "campaign_poll_seconds": 0.05,
        }
    )
    app = create_app(configured, resolver=stub_resolver)
    svc = app.state.services
    await svc.db.migrate()
    user = await _user(svc.db)
    ids = await _started(svc.db, Clock(time.time()), user, 3)
    install(svc, domains=("acme.test",))
    async with serving(app):
        for _ in range(3000):  # a hang guard: the loop ticks every 0.05 s
            if len(await _rows(svc.db, CampaignSend)) == 3:
                break
            await asyncio.sleep(0.01)
    sends = await _rows(svc.db, CampaignSend)
    assert sorted(s["lead_id"] for s in sends) == sorted(ids.lead_ids)
