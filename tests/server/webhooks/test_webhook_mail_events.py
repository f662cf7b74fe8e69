"""Mail platform webhook events over the real pieces, on SQLite and PostgreSQL: messages sent
through the outbox worker to the lab's Postfix (email.sent, and email.failed for a refused
recipient), the tracking routes (email.opened / email.clicked with the actor), domain checks
(domain.verified, domain.dns_failed), and the inbound SMTP endpoint (email.received, and
email.bounced from a DSN); each delivered to a loopback receiver and verified with stock Standard
Webhooks code. Events are queued in the transaction of their fact, once: raising one again (a
retried write) queues nothing, and no payload carries a body or a secret."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from lab.maillab import MailLab
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook
from webhook_receiver import Receiver, running_receiver

from server.campaigns.sequencer_store import stop_lead
from server.db.engine import Database
from server.db.models import MailMessage, WebhookDelivery
from server.db.tx import read_connection, write_transaction
from server.mail.outbox import Outbox
from server.mail.relay import Relay, RelayConfig
from server.mail.worker import MailWorker
from server.settings import Settings
from server.webhooks.dispatch import Dispatcher
from server.webhooks.events import EVENT_TYPES, derived_event_id
from server.webhooks.mail_events import campaign_lead_event, email_outcome_event
from server.webhooks.store import WebhookStore

_TESTS = Path(__file__).resolve().parents[1]
for _shared in ("mail", "inbound_mail"):  # their helper modules (these folders are no packages)
    if str(_TESTS / _shared) not in sys.path:
        sys.path.append(str(_TESTS / _shared))

from inbound_helpers import dsn, make_users, message, running_endpoint  # noqa: E402
from mail_lab_support import started_relay_lab, wait_delivered  # noqa: E402

from tests.server.campaigns.factory import make_campaign  # noqa: E402

PUBLIC = "https://t.bavlio.test"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
HTML = (
    '<html><body><p>Secret offer body</p><a href="https://acme.example/pricing">p</a></body></html>'
)
BODY_MARKERS = ("Secret offer body", "Hi Ann", "It failed")


@pytest.fixture(scope="module")
def relay_lab() -> Iterator[MailLab]:
    """Postfix as the relay for this module."""
    yield from started_relay_lab()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="function")
async def app(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    """The keyed app with tracking links; the tests dispatch webhooks themselves."""
    settings = keyed_settings(
        backend_settings, tmp_path, public_url=PUBLIC, webhooks_dispatch=False
    )
    async with keyed_app(settings) as running:
        yield running


async def _deliver(store: WebhookStore, receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Dispatch everything due; the payloads the receiver got, each signature verified."""
    dispatcher = Dispatcher(store, allow_private=True, allow_http=True)
    try:
        while await dispatcher.tick():
            pass
    finally:
        await dispatcher.aclose()
    got = [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
    receiver.received.clear()
    for payload in got:
        text = json.dumps(payload)
        assert not any(marker in text for marker in BODY_MARKERS), text
        assert "whsec_" not in text
        assert "PRIVATE KEY" not in text
        assert payload["type"] in EVENT_TYPES
    return got


def _of(payloads: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [p["data"] for p in payloads if p["type"] == event_type]


async def test_sent_failed_opened_clicked_and_domain_events(
    app: Keyed, relay_lab: MailLab, receiver: Receiver
) -> None:
    user_id, ann = await app.user()
    store = app.services.webhooks
    _, secret = await store.create(
        user_id, url=f"{receiver.url}/hooks", description="", event_types=[]
    )
    made = await app.client.post(
        "/api/v1/bavimail/domains", json={"name": "acme.test", "tracking": True}, headers=ann
    )
    assert made.status_code == 201, made.text
    domain_id = made.json()["id"]
    await app.services.mail.record_check(user_id, domain_id, [], "verified", pending_ok=False)
    box = "john.smith" if app.services.db.dialect == "sqlite" else "jane.doe"
    before = len(wait_delivered(relay_lab, box, 0))
    ids = {}
    for to in (f"{box}@inbox.test", "nobody@inbox.test"):
        sent = await app.client.post(
            "/api/v1/bavimail/emails",
            json={"from": "ann@acme.test", "to": [to], "subject": "Offer", "html": HTML},
            headers=ann,
        )
        assert sent.status_code == 202, sent.text
        ids[to] = sent.json()["id"]
    relay = Relay(RelayConfig(host=relay_lab.ip("relay"), port=25, starttls=False, timeout=15))
    worker = MailWorker(Outbox(app.services.db), lambda: relay)
    while await worker.run_once(relay):
        pass
    await relay.close()
    [raw] = wait_delivered(relay_lab, box, before + 1)[before:]

    payloads = await _deliver(store, receiver, secret)
    [verified] = _of(payloads, "domain.verified")
    assert verified == {"domain_id": domain_id, "domain": "acme.test", "status": "verified"}
    [ok] = _of(payloads, "email.sent")
    assert ok["email_id"] == ids[f"{box}@inbox.test"]
    assert (ok["state"], ok["subject"], ok["to"]) == ("sent", "Offer", [f"{box}@inbox.test"])
    assert ok["relay_queue_id"]
    assert ok["message_id"].strip("<>").encode() in raw
    [refused] = _of(payloads, "email.failed")
    assert (refused["email_id"], refused["error_code"]) == (
        ids["nobody@inbox.test"],
        "relay_rejected",
    )
    sent_events = [p for p in payloads if p["type"] == "email.sent"]
    assert sent_events[0]["id"] == derived_event_id("email.sent", ok["email_id"])

    # the tracking routes: a person opens and clicks, a scanner probes the link
    email_id = ids[f"{box}@inbox.test"]
    async with read_connection(app.services.db.engine) as conn:
        stored = (
            await conn.execute(select(MailMessage.raw).where(MailMessage.id == email_id))
        ).scalar_one()
    parsed = message_from_bytes(stored, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(preferencelist=("html",))
    assert part is not None
    html = part.get_content()
    [pixel] = re.findall(r'src="https://t\.bavlio\.test(/t/o/[^"]+\.gif)"', html)
    [click] = re.findall(r'href="https://t\.bavlio\.test(/t/c/[^"]+)"', html)
    assert (await app.client.get(pixel, headers={"User-Agent": BROWSER})).status_code == 200
    assert (await app.client.get(click, headers={"User-Agent": BROWSER})).status_code == 307
    assert (await app.client.head(click, headers={"User-Agent": BROWSER})).status_code == 307
    payloads = await _deliver(store, receiver, secret)
    [opened] = _of(payloads, "email.opened")
    assert (opened["email_id"], opened["actor"], opened["by_person"]) == (email_id, "person", True)
    clicks = sorted(_of(payloads, "email.clicked"), key=lambda c: c["actor"])
    assert [(c["actor"], c["by_person"], c["link_index"]) for c in clicks] == [
        ("person", True, 0),
        ("scanner", False, 0),
    ]
    assert {c["url"] for c in clicks} == {"https://acme.example/pricing"}

    # the domain's records stop checking out
    checks = [
        {"purpose": "spf", "type": "TXT", "name": "acme.test", "value": "v=spf1", "status": "ok"},
        {"purpose": "dkim", "type": "TXT", "name": "s._domainkey.acme.test", "value": "p=MII",
         "status": "missing"},
    ]  # fmt: skip
    await app.services.mail.record_check(
        user_id, domain_id, checks, "not_verified", pending_ok=False
    )
    await app.services.mail.record_check(
        user_id, domain_id, checks, "not_verified", pending_ok=False
    )
    payloads = await _deliver(store, receiver, secret)
    [failed] = _of(payloads, "domain.dns_failed")  # once: the second check changed nothing
    assert failed["status"] == "pending"
    assert failed["failing_records"] == [
        {"purpose": "dkim", "type": "TXT", "name": "s._domainkey.acme.test", "status": "missing"}
    ]
    assert len(payloads) == 1

    # raising a stored outcome again (a retried write) queues nothing new
    async with write_transaction(app.services.db.engine) as conn:
        row = (
            (await conn.execute(select(MailMessage.__table__).where(MailMessage.id == email_id)))
            .mappings()
            .one()
        )
        assert await email_outcome_event(conn, dict(row)) == 0
    async with read_connection(app.services.db.engine) as conn:
        queued = (
            (
                await conn.execute(
                    select(WebhookDelivery.event_type).where(WebhookDelivery.user_id == user_id)
                )
            )
            .scalars()
            .all()
        )
    assert sorted(queued).count("email.sent") == 1


async def test_an_endpoint_gets_only_the_types_it_took(
    app: Keyed, relay_lab: MailLab, receiver: Receiver
) -> None:
    user_id, ann = await app.user()
    store = app.services.webhooks
    _, secret = await store.create(
        user_id, url=f"{receiver.url}/only", description="", event_types=["email.failed"]
    )
    made = await app.client.post(
        "/api/v1/bavimail/domains", json={"name": "acme.test"}, headers=ann
    )
    await app.services.mail.record_check(
        user_id, made.json()["id"], [], "verified", pending_ok=False
    )
    sent = await app.client.post(
        "/api/v1/bavimail/emails",
        json={"from": "ann@acme.test", "to": ["nobody@inbox.test"], "subject": "S", "text": "t"},
        headers=ann,
    )
    assert sent.status_code == 202, sent.text
    relay = Relay(RelayConfig(host=relay_lab.ip("relay"), port=25, starttls=False, timeout=15))
    worker = MailWorker(Outbox(app.services.db), lambda: relay)
    while await worker.run_once(relay):
        pass
    await relay.close()
    payloads = await _deliver(store, receiver, secret)
    assert [p["type"] for p in payloads] == ["email.failed"]
    assert payloads[0]["data"]["email_id"] == sent.json()["id"]
    # every recipient suppressed: failed when submitted, raised in that same transaction
    added = await app.client.post(
        "/api/v1/suppression/", json={"email": "gone@company.test"}, headers=ann
    )
    assert added.status_code in (200, 201), added.text
    gone = await app.client.post(
        "/api/v1/bavimail/emails",
        json={"from": "ann@acme.test", "to": "gone@company.test", "subject": "S", "text": "t"},
        headers=ann,
    )
    assert gone.status_code == 202, gone.text
    assert gone.json()["status"] == "failed"
    [suppressed] = await _deliver(store, receiver, secret)
    assert suppressed["type"] == "email.failed"
    assert suppressed["data"]["email_id"] == gone.json()["id"]
    assert suppressed["data"]["suppressed"] == [
        {"address": "gone@company.test", "reason": gone.json()["suppressed"][0]["reason"]}
    ]


async def test_received_and_bounced_from_the_inbound_endpoint(
    db: Database, tmp_path: Path, receiver: Receiver
) -> None:
    (ann,) = await make_users(db, "ann")
    store = WebhookStore(db.engine, lambda: b"s" * 32)
    _, secret = await store.create(ann, url=f"{receiver.url}/in", description="", event_types=[])
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        await ep.store.link_outbound(ann, sent_message_id="msg_7", message_id="out7@acme.test")
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=ep.port, start_tls=False, timeout=10)
        await client.connect()
        await client.sendmail("bob@client.test", ["ann@acme.test"], message(attachment=b"%PDF"))
        report = dsn(
            "out7@acme.test",
            [
                ("gone@far.test", "failed", "5.1.1"),
                ("full@far.test", "delayed", "4.2.2"),
                ("ok@far.test", "delivered", "2.0.0"),
            ],
        )
        await client.sendmail("", ["bounces+msg_7@rp.acme.test"], report)
        await client.quit()
        (inbound, _) = sorted(
            await ep.store.list_inbound(ann, after=None, offset=0, limit=10),
            key=lambda r: r.kind != "message",
        )
    payloads = await _deliver(store, receiver, secret)
    [received] = _of(payloads, "email.received")  # the DSN itself is no email.received
    assert received == {
        "inbound_email_id": inbound.id,
        "conversation_id": inbound.conversation_id,
        "message_id": "m1@client.test",
        "from": "bob@client.test",
        "to": ["ann@acme.test"],
        "subject": "Hello",
        "size_bytes": inbound.size,
        "attachments": 1,
        "auto_reply": None,
    }
    bounced = sorted(_of(payloads, "email.bounced"), key=lambda b: b["recipient"])
    assert [(b["recipient"], b["bounce_type"], b["status"], b["email_id"]) for b in bounced] == [
        ("full@far.test", "soft", "4.2.2", "msg_7"),
        ("gone@far.test", "hard", "5.1.1", "msg_7"),
    ]  # the "delivered" line raises nothing


async def test_campaign_lead_events_are_raised_once(db: Database, receiver: Receiver) -> None:
    (ann,) = await make_users(db, "ann")
    store = WebhookStore(db.engine, lambda: b"s" * 32)
    _, secret = await store.create(ann, url=f"{receiver.url}/c", description="", event_types=[])
    for _ in range(2):  # the sequencer's write retried: one event
        async with write_transaction(db.engine) as conn:
            await campaign_lead_event(
                conn,
                ann,
                kind="replied",
                campaign_id="cmp_1",
                lead_id="cld_1",
                email="lead@far.test",
                email_id="email_1",
                event_row_id="cev_1",
            )
    async with write_transaction(db.engine) as conn:
        assert (
            await campaign_lead_event(
                conn,
                ann,
                kind="stopped",
                campaign_id="cmp_1",
                lead_id="cld_1",
                email=None,
                email_id=None,
                event_row_id="cev_2",
            )
            == 0
        )
        await campaign_lead_event(
            conn,
            ann,
            kind="unsubscribed",
            campaign_id="cmp_1",
            lead_id="cld_2",
            email="other@far.test",
            email_id=None,
            event_row_id="cev_3",
        )
    # a rolled-back transaction raises nothing
    with pytest.raises(RuntimeError):
        await _replied_then_fail(db, ann)
    payloads = await _deliver(store, receiver, secret)
    assert sorted((p["type"], p["data"]["lead_id"]) for p in payloads) == [
        ("campaign.lead_replied", "cld_1"),
        ("campaign.lead_unsubscribed", "cld_2"),
    ]


async def _replied_then_fail(db: Database, user_id: str) -> None:
    async with write_transaction(db.engine) as conn:
        await campaign_lead_event(
            conn,
            user_id,
            kind="replied",
            campaign_id="cmp_1",
            lead_id="cld_3",
            email=None,
            email_id=None,
            event_row_id="cev_4",
        )
        raise RuntimeError("the caller's write failed")


def test_derived_event_ids_are_stable_ids() -> None:
    first = derived_event_id("email.sent", "email_01")
    assert first == derived_event_id("email.sent", "email_01")
    assert first != derived_event_id("email.failed", "email_01")
    assert re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", first)


async def test_a_stopped_lead_raises_its_webhook_once(db: Database, receiver: Receiver) -> None:
    """The sequencer's stop path (reply, unsubscribe) queues the customer event with the lead's
    address, once however often the stop is recorded; a manual stop raises nothing."""
    (ann,) = await make_users(db, "ann")
    made = await make_campaign(
        db,
        user_id=ann,
        status="active",
        leads=[{"email": "lead@far.test"}, {"email": "b@far.test"}],
        lead_status="active",
        due_at=0.0,
    )
    store = WebhookStore(db.engine, lambda: b"s" * 32)
    _, secret = await store.create(ann, url=f"{receiver.url}/s", description="", event_types=[])
    first, second = made.lead_ids
    for _ in range(2):
        async with write_transaction(db.engine) as conn:
            await stop_lead(
                conn, first, made.campaign_id, reason="replied", now=1.0, email_id="inb_1"
            )
    async with write_transaction(db.engine) as conn:
        await stop_lead(conn, second, made.campaign_id, reason="manual", kind="stopped", now=2.0)
    payloads = await _deliver(store, receiver, secret)
    assert [(p["type"], p["data"]["lead_id"], p["data"]["email"]) for p in payloads] == [
        ("campaign.lead_replied", first, "lead@far.test")
    ]
