"""How a DSN finds the message it returns, on SQLite and PostgreSQL: by the VERP address it was
sent to, by the returned Message-ID, by the relay's queue id; and what a forged or stray report
can do (nothing to anyone the message was not sent to). The VERP address rule is a pure
function with property tests."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from inbound_helpers import make_users, running_endpoint
from mail_support import SELECTOR, FakeIdentity, signing_key

from server.db.engine import Database
from server.db.models import MailMessage
from server.ids import new_id
from server.mail.identity import return_path_of
from server.mail.inbound_smtp import InboundConfig
from server.mail.message import Draft
from server.mail.outbox import MailRecord, Outbox
from server.mail.service import MailService
from server.mail.verp import verp_address, verp_email_id

CONFIG = InboundConfig(bounce_domains=frozenset({"rp.acme.test"}), return_path_subdomain="bounces")


def report(
    recipients: list[tuple[str, str]], *, message_id: str | None, queue_id: str | None = None
) -> bytes:
    """A Postfix-shaped DSN: ``(recipient, status)`` rows, failed; the returned headers carry
    ``message_id`` (none: no returned part at all)."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\nAction: failed\nStatus: {s}\n"
        f"Diagnostic-Code: smtp; 550 {s} refused\n\n"
        for r, s in recipients
    )
    head = "Reporting-MTA: dns; mx.test\n"
    if queue_id:
        head += f"X-Postfix-Queue-ID: {queue_id}\n"
    returned = (
        f"--B\nContent-Type: text/rfc822-headers\n\nFrom: ann@acme.test\n"
        f"Message-ID: <{message_id}>\n\n"
        if message_id
        else ""
    )
    return (
        "From: MAILER-DAEMON@mx.test\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nIt failed.\n\n"
        f"--B\nContent-Type: message/delivery-status\n\n{head}\n{blocks}{returned}--B--\n"
    ).encode()


async def _sent(db: Database, user_id: str, to: list[str], *, queue_id: str) -> MailRecord:
    """A message in the outbox, handed off under ``queue_id``."""

    async def identity(user: str, address: str) -> FakeIdentity:
        return FakeIdentity(
            "acme.test", SELECTOR, signing_key()[0], return_path="bounces.acme.test"
        )

    outbox = Outbox(db)
    record = await MailService(outbox, identity=identity).submit(
        user_id, Draft(from_="ann@acme.test", to=to, subject="Offer", text="Hi\n")
    )
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.update(MailMessage)
            .where(MailMessage.id == record.id)
            .values(state="sent", relay_queue_id=queue_id)
        )
    return record


async def _send(port: int, rcpt: str, raw: bytes) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.sendmail("", [rcpt], raw)
    finally:
        await client.quit()


async def test_each_link_finds_the_message(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    by_verp = await _sent(db, ann, ["a@far.test"], queue_id="4QX1AbC01")
    by_mid = await _sent(db, ann, ["b@far.test"], queue_id="4QX1AbC02")
    by_qid = await _sent(db, ann, ["c@far.test"], queue_id="4QX1AbC03")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=CONFIG) as ep:
        # The VERP address alone (no Message-ID returned), in whatever case it comes back.
        verp = verp_address(by_verp.id, "bounces.acme.test").upper()
        await _send(ep.port, verp, report([("a@far.test", "5.1.1")], message_id=None))
        # The returned Message-ID, sent to the plain bounce address.
        mid = by_mid.message_id.strip("<>")
        await _send(
            ep.port, "bounces@rp.acme.test", report([("b@far.test", "4.2.2")], message_id=mid)
        )
        # Neither: the relay's queue id and a recipient of that message.
        raw = report([("c@far.test", "5.1.1")], message_id=None, queue_id="4QX1AbC03")
        await _send(ep.port, "bounces@rp.acme.test", raw)

        rows = {i: await ep.store.bounces_of(i) for i in (by_verp.id, by_mid.id, by_qid.id)}
        assert [(b["recipient"], b["kind"]) for b in rows[by_verp.id]] == [("a@far.test", "hard")]
        assert [(b["recipient"], b["kind"]) for b in rows[by_mid.id]] == [("b@far.test", "soft")]
        assert [(b["recipient"], b["kind"]) for b in rows[by_qid.id]] == [("c@far.test", "hard")]
        assert sorted(ep.suppression.entries) == sorted(
            [(ann, "a@far.test", "5.1.1", by_verp.id), (ann, "c@far.test", "5.1.1", by_qid.id)]
        )


async def test_forged_reports_touch_no_one_else(db: Database, tmp_path: Path) -> None:
    ann, eve = await make_users(db, "ann", "eve")
    sent = await _sent(db, ann, ["real@far.test", "co@far.test"], queue_id="4QX1AbC10")
    await _sent(db, eve, ["eve@far.test"], queue_id="4QX1AbC11")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=CONFIG) as ep:
        verp = verp_address(sent.id, "bounces.acme.test")
        # A report naming an address the message never went to: dropped whole.
        await _send(ep.port, verp, report([("victim@far.test", "5.1.1")], message_id=None))
        # Mixed: only the message's own recipient is believed.
        mixed = report([("victim@far.test", "5.1.1"), ("co@far.test", "5.1.1")], message_id=None)
        await _send(ep.port, verp, mixed)
        # A queue id of another user's message, naming our recipient: no link.
        raw = report([("real@far.test", "5.1.1")], message_id=None, queue_id="4QX1AbC11")
        await _send(ep.port, "bounces@rp.acme.test", raw)
        # A VERP id in the right shape that is no message of ours, or one of ours on another
        # domain's bounce subdomain: refused at RCPT.
        for ghost in (
            verp_address(new_id("email"), "bounces.acme.test"),
            verp_address(sent.id, "bounces.other.test"),
        ):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await _send(ep.port, ghost, report([("real@far.test", "5.1.1")], message_id=None))

        rows = await ep.store.bounces_of(sent.id)
        assert [b["recipient"] for b in rows] == ["co@far.test"]
        assert ep.suppression.entries == [(ann, "co@far.test", "5.1.1", sent.id)]
        assert len(await ep.store.list_inbound(ann, after=None, offset=0, limit=10)) == 1
        assert await ep.store.list_inbound(eve, after=None, offset=0, limit=10) == []


async def test_the_bounce_subdomain_takes_only_verp_addresses(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=CONFIG) as ep:
        handler = ep.handler
        for address in (
            "bounces@bounces.other.test",  # no tag
            "bounces+msg_7@bounces.other.test",  # not an email id
            "postmaster@bounces.other.test",
            "bounces+email_01ABC@bounces.other.test",  # too short
        ):
            route, reply = await handler.route(address)
            assert route is None, address
            assert reply.startswith("550"), reply
        unknown = verp_address(new_id("email"), "bounces.other.test")
        route, reply = await handler.route(unknown)
        assert route is None
        assert reply.startswith("550")
        sent = await _sent(db, ann, ["a@far.test"], queue_id="4QX1AbC20")
        route, reply = await handler.route(verp_address(sent.id, "bounces.acme.test"))
        assert route is not None
        assert reply.startswith("250")


_IDS = st.builds(lambda: new_id("email"))


@given(_IDS, st.sampled_from(["bounces.acme.test", "BOUNCES.Acme.Test"]))
def test_verp_round_trips(email_id: str, domain: str) -> None:
    address = verp_address(email_id, domain)
    local, _, host = address.partition("@")
    assert len(local) <= 64
    assert host == domain.lower()
    assert verp_email_id(local) == email_id
    assert verp_email_id(local.upper()) == email_id


@given(st.text(max_size=200))
def test_verp_email_id_is_total(local: str) -> None:
    found = verp_email_id(local)
    assert found is None or local.lower().startswith("bounces+email_")


def test_return_path_only_once_checked_ok() -> None:
    ok = {"purpose": "return_path", "status": "ok", "name": "bounces.acme.test"}
    assert return_path_of([ok]) == "bounces.acme.test"
    assert return_path_of([{**ok, "status": "missing"}]) is None
    assert return_path_of([{**ok, "name": "not a domain"}]) is None
    assert return_path_of(None) is None
    assert return_path_of([{"purpose": "spf", "status": "ok", "name": "acme.test"}]) is None
