"""BaviMail through the mail lab's real Postfix: messages read back from the lab mailbox verify
with the DKIM key and carry the headers and bodies sent; refusals, STARTTLS, connection reuse."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import dkim
import pytest
from lab.maillab import MailLab
from mail_lab_support import delivered, parse, started_relay_lab, wait_delivered
from mail_support import dkim_dns, identities, suppressing

from server.db.engine import Database
from server.mail.message import Attachment, Draft
from server.mail.outbox import Outbox
from server.mail.outbox_rules import State
from server.mail.relay import Relay, RelayConfig
from server.mail.service import MailService
from server.mail.worker import MailWorker


@pytest.fixture(scope="module")
def relay_lab() -> Iterator[MailLab]:
    """Postfix as the relay, shared by the module (tests use their own mailboxes)."""
    yield from started_relay_lab()


def plain(lab: MailLab) -> RelayConfig:
    return RelayConfig(host=lab.ip("relay"), port=25, starttls=False, timeout=15)


async def drain(worker: MailWorker, relay: Relay) -> None:
    while await worker.run_once(relay):
        pass
    await relay.close()


def on_wire(raw: bytes) -> bytes:
    """A Maildir file (LF line ends) as the message travelled (CRLF)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def test_delivered_mail_verifies_and_carries_what_was_sent(
    db: Database, relay_lab: MailLab
) -> None:
    user = "john.smith" if db.dialect == "sqlite" else "jane.doe"
    before = len(delivered(relay_lab, user))
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    to = f"{user}@inbox.test"
    first = await mail.submit(
        "usr_a", Draft(from_="Ann <ann@acme.test>", to=[to], subject="Plain", text="Hello\n")
    )
    second = await mail.submit(
        "usr_a",
        Draft(
            from_="Zoë <ann@acme.test>",
            to=[to],
            subject="Grüße — bulk",
            text="Grüße\n",
            html="<p>Grüße</p>",
            attachments=[
                Attachment("r.pdf", base64.b64encode(b"%PDF").decode(), "application/pdf")
            ],
            headers={"X-Campaign": "q4"},
            list_unsubscribe="https://acme.test/u/tok",
        ),
    )
    relay = Relay(plain(relay_lab))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    for rec in (first, second):
        got = await mail.outbox.get("usr_a", rec.id)
        assert got is not None
        assert got.state is State.SENT
        assert got.relay_queue_id
        assert got.relay_reply is not None
        assert got.relay_reply.startswith("250")
    messages = wait_delivered(relay_lab, user, before + 2)[before:]
    assert len(messages) == 2
    by_id = {parse(m)["Message-ID"]: m for m in messages}
    assert set(by_id) == {first.message_id, second.message_id}
    for raw in messages:
        assert dkim.verify(on_wire(raw), dnsfunc=dkim_dns)
    bulk = parse(by_id[second.message_id])
    assert bulk["Subject"] == "Grüße — bulk"
    assert bulk["List-Unsubscribe"] == "<https://acme.test/u/tok>"
    assert bulk["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert bulk["X-Campaign"] == "q4"
    assert bulk["Return-Path"] == "<ann@acme.test>"
    assert [p.get_content_type() for p in bulk.walk()][-1] == "application/pdf"
    got = await mail.outbox.get("usr_a", second.id)
    assert got is not None
    assert f"id {got.relay_queue_id}" in " ".join(bulk.get_all("Received") or [])
    simple = parse(by_id[first.message_id])
    assert simple.get_content().strip() == "Hello"


async def test_a_tampered_delivery_fails_dkim(db: Database, relay_lab: MailLab) -> None:
    if db.dialect != "sqlite":
        pytest.skip("one backend is enough for a relay-side property")
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    before = len(delivered(relay_lab, "part"))
    await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["part@inbox.test"], subject="S", text="Body\n")
    )
    relay = Relay(plain(relay_lab))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    raw = on_wire(wait_delivered(relay_lab, "part", before + 1)[-1])
    assert dkim.verify(raw, dnsfunc=dkim_dns)
    assert not dkim.verify(raw.replace(b"Body", b"B0dy"), dnsfunc=dkim_dns)
    assert not dkim.verify(raw.replace(b"Subject: S", b"Subject: T"), dnsfunc=dkim_dns)


async def test_refused_recipients_fail_or_are_reported(db: Database, relay_lab: MailLab) -> None:
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    nobody = await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["nobody@inbox.test"], subject="s", text="t")
    )
    partly = await mail.submit(
        "usr_a",
        Draft(
            from_="ann@acme.test",
            to=["nopr@inbox.test", "ghost@inbox.test"],
            subject="s",
            text="t",
        ),
    )
    relay = Relay(plain(relay_lab))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    failed = await mail.outbox.get("usr_a", nobody.id)
    assert failed is not None
    assert failed.state is State.FAILED
    assert failed.error_code == "relay_rejected"
    assert failed.relay_reply is not None
    assert failed.relay_reply.startswith("550")
    sent = await mail.outbox.get("usr_a", partly.id)
    assert sent is not None
    assert sent.state is State.SENT
    assert sent.error_code == "recipients_refused"
    assert "ghost@inbox.test" in (sent.error_message or "")


async def test_starttls_with_the_relays_certificate(db: Database, relay_lab: MailLab) -> None:
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    before = len(delivered(relay_lab, "tls"))
    await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["tls@inbox.test"], subject="tls", text="t")
    )
    config = RelayConfig(
        host=relay_lab.ip("relay"),
        starttls=True,
        cert_bundle=str(relay_lab.cert_path),
        check_hostname=False,
        timeout=15,
    )
    relay = Relay(config)
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    raw = wait_delivered(relay_lab, "tls", before + 1)[-1]
    received = " ".join(parse(raw).get_all("Received") or [])
    assert "ESMTPS" in received  # Postfix notes the TLS session
    assert await mail.outbox.count_by_state() == {"sent": 1}


async def test_untrusted_certificate_defers_and_never_sends(
    db: Database, relay_lab: MailLab
) -> None:
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    rec = await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["tls@inbox.test"], subject="x", text="t")
    )
    relay = Relay(RelayConfig(host=relay_lab.ip("relay"), starttls=True, timeout=15))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    got = await mail.outbox.get("usr_a", rec.id)
    assert got is not None
    assert got.state is State.QUEUED
    assert got.attempts == 1
    assert got.next_attempt_at > got.created_at
    assert got.relay_reply is not None
    assert "relay unreachable" in got.relay_reply


async def test_one_connection_carries_a_whole_batch(db: Database, relay_lab: MailLab) -> None:
    if db.dialect != "sqlite":
        pytest.skip("one backend is enough for a relay-side property")
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    for i in range(20):
        await mail.submit(
            "usr_a", Draft(from_="ann@acme.test", to=["reuse@inbox.test"], subject=f"{i}", text="t")
        )
    log = relay_lab.log_path
    connects_before = log.read_text().count("connect from") if log.exists() else 0
    relay = Relay(plain(relay_lab))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    assert len(wait_delivered(relay_lab, "reuse", 20)) >= 20
    connects = log.read_text().count("]: connect from") - connects_before
    assert connects <= 2  # postlogd may lag; never one per message
    assert await mail.outbox.count_by_state() == {"sent": 20}


async def test_an_unreachable_relay_defers(db: Database) -> None:
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    rec = await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["x@inbox.test"], subject="x", text="t")
    )
    relay = Relay(RelayConfig(host="127.0.0.1", port=1, starttls=False, timeout=5))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    got = await mail.outbox.get("usr_a", rec.id)
    assert got is not None
    assert got.state is State.QUEUED
    assert got.attempts == 1
    assert got.next_attempt_at >= got.created_at + 60


async def test_hand_off_groups_deliver_each_message_once(db: Database, relay_lab: MailLab) -> None:
    if db.dialect != "sqlite":
        pytest.skip("one backend is enough for the worker's grouping")
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    before = len(delivered(relay_lab, "bench"))
    ids = set()
    for i in range(12):
        rec = await mail.submit(
            "usr_a", Draft(from_="ann@acme.test", to=["bench@inbox.test"], subject=f"{i}", text="t")
        )
        ids.add(rec.message_id)
    relay = Relay(plain(relay_lab))
    await drain(MailWorker(mail.outbox, lambda: relay, handoff_group=5, batch=7), relay)
    assert await mail.outbox.count_by_state() == {"sent": 12}
    got = [parse(m)["Message-ID"] for m in wait_delivered(relay_lab, "bench", before + 12)[before:]]
    assert sorted(got) == sorted(ids)


async def test_suppression_is_checked_again_at_send_time(db: Database, relay_lab: MailLab) -> None:
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    gone = await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["nopr@inbox.test"], subject="g", text="t")
    )
    half = await mail.submit(
        "usr_a",
        Draft(
            from_="ann@acme.test", to=["nopr@inbox.test", "part@inbox.test"], subject="h", text="t"
        ),
    )
    relay = Relay(plain(relay_lab))
    check = suppressing({"nopr@inbox.test": "unsubscribed"})
    await drain(MailWorker(mail.outbox, lambda: relay, suppression=check), relay)
    failed = await mail.outbox.get("usr_a", gone.id)
    assert failed is not None
    assert failed.state is State.FAILED
    assert failed.error_code == "all_recipients_suppressed"
    assert failed.attempts == 0  # never handed to the relay
    assert failed.suppressed == [{"address": "nopr@inbox.test", "reason": "unsubscribed"}]
    sent = await mail.outbox.get("usr_a", half.id)
    assert sent is not None
    assert sent.state is State.SENT
    assert sent.suppressed == [{"address": "nopr@inbox.test", "reason": "unsubscribed"}]


async def test_the_send_rate_gives_messages_back(db: Database, relay_lab: MailLab) -> None:
    if db.dialect != "sqlite":
        pytest.skip("one backend is enough for the worker's rate")
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    for i in range(5):
        await mail.submit(
            "usr_a", Draft(from_="ann@acme.test", to=["part@inbox.test"], subject=f"{i}", text="t")
        )
    relay = Relay(plain(relay_lab))
    frozen = [time.time() + 1]
    worker = MailWorker(
        mail.outbox,
        lambda: relay,
        rate_per_domain=0.001,
        burst=2,
        lease_seconds=30,
        clock=lambda: frozen[0],
    )
    assert await worker.run_once(relay) == 2  # the burst; the rest would wait too long
    await relay.close()
    assert await mail.outbox.count_by_state() == {"sent": 2, "queued": 3}
    assert len(await mail.outbox.claim("other", frozen[0], 30, 10)) == 3  # given back, not leased
