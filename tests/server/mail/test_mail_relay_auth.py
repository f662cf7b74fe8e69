"""The relay client's AUTH against the mail lab's real Postfix doing cyrus SASL (sasldb, PLAIN and
LOGIN, only after STARTTLS, relaying only for authenticated clients): the right credentials
deliver a DKIM-signed message, wrong ones defer it with a clear, password-free reason, none are
refused."""

from __future__ import annotations

from collections.abc import Iterator

import aiosmtplib
import dkim
import pytest
from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import running_mail
from mail_lab_support import USERS, delivered, parse, wait_delivered
from mail_support import dkim_dns, identities

from server.db.engine import Database
from server.mail.message import Draft
from server.mail.outbox import Outbox
from server.mail.outbox_rules import RelayOutcome, State
from server.mail.relay import Relay, RelayConfig
from server.mail.service import MailService
from server.mail.worker import MailWorker

USER, PASSWORD = "bavlio-relay", "Corr3ct-horse-battery"
WRONG = "Wr0ng-staple-9f3k"


@pytest.fixture(scope="module")
def auth_relay_lab() -> Iterator[MailLab]:
    """A relay lab with a SASL submission listener knowing one user (shared by the module)."""
    lab = MailLab(
        listeners=[Listener("relay", "mx.relay.test", 2, profile="bench")],
        domains=[MailDomain("inbox.test", mx=("relay",), users=USERS)],
        sasl_users={USER: PASSWORD},
    )
    with running_mail(lab):
        yield lab


def submission(
    lab: MailLab, username: str | None, password: str | None, starttls: bool = True
) -> RelayConfig:
    host, port = lab.submission
    return RelayConfig(
        host=host,
        port=port,
        starttls=starttls,
        cert_bundle=str(lab.cert_path),
        check_hostname=False,
        username=username,
        password=password,
        timeout=15,
    )


def one_backend(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("one backend is enough for a relay-side property")


async def drain(worker: MailWorker, relay: Relay) -> None:
    while await worker.run_once(relay):
        pass
    await relay.close()


async def test_right_credentials_deliver_a_signed_message(
    db: Database, auth_relay_lab: MailLab
) -> None:
    one_backend(db)
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    before = len(delivered(auth_relay_lab, "john.smith"))
    rec = await mail.submit(
        "usr_a",
        Draft(from_="ann@acme.test", to=["john.smith@inbox.test"], subject="auth", text="Hi\n"),
    )
    relay = Relay(submission(auth_relay_lab, USER, PASSWORD))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    got = await mail.outbox.get("usr_a", rec.id)
    assert got is not None
    assert got.state is State.SENT
    assert got.relay_queue_id
    raw = wait_delivered(auth_relay_lab, "john.smith", before + 1)[-1]
    msg = parse(raw)
    assert msg["Message-ID"] == rec.message_id
    assert dkim.verify(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), dnsfunc=dkim_dns)
    received = " ".join(msg.get_all("Received") or [])
    assert "ESMTPSA" in received  # Postfix notes an authenticated TLS session
    assert f"id {got.relay_queue_id}" in received


async def test_a_wrong_password_defers_with_a_clear_password_free_reason(
    db: Database, auth_relay_lab: MailLab
) -> None:
    one_backend(db)
    result = await Relay(submission(auth_relay_lab, USER, WRONG)).send(
        "ann@acme.test", ["jane.doe@inbox.test"], b"Subject: x\r\n\r\nx\r\n"
    )
    assert result.outcome is RelayOutcome.TEMPORARY
    assert result.code == 535
    assert result.reply.startswith("relay refused our credentials: ")
    assert not result.ambiguous
    assert WRONG not in result.reply
    # Through the worker: the message waits (a configuration error never drops mail).
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    before = len(delivered(auth_relay_lab, "jane.doe"))
    rec = await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["jane.doe@inbox.test"], subject="s", text="t")
    )
    relay = Relay(submission(auth_relay_lab, USER, WRONG))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    got = await mail.outbox.get("usr_a", rec.id)
    assert got is not None
    assert got.state is State.QUEUED
    assert got.attempts == 1
    assert got.next_attempt_at > got.created_at
    assert got.relay_reply is not None
    assert "relay refused our credentials" in got.relay_reply
    assert WRONG not in got.relay_reply
    assert PASSWORD not in got.relay_reply
    assert len(delivered(auth_relay_lab, "jane.doe")) == before


async def test_no_credentials_are_refused_relaying(db: Database, auth_relay_lab: MailLab) -> None:
    one_backend(db)
    mail = MailService(Outbox(db), identity=identities({"acme.test"}))
    before = len(delivered(auth_relay_lab, "nopr"))
    rec = await mail.submit(
        "usr_a", Draft(from_="ann@acme.test", to=["nopr@inbox.test"], subject="s", text="t")
    )
    relay = Relay(submission(auth_relay_lab, None, None))
    await drain(MailWorker(mail.outbox, lambda: relay), relay)
    got = await mail.outbox.get("usr_a", rec.id)
    assert got is not None
    assert got.state is State.FAILED
    assert got.error_code == "relay_rejected"
    assert got.relay_reply is not None
    assert got.relay_reply.startswith("554")
    assert got.relay_queue_id is None
    # Refused at RCPT, so Postfix never queued it: nothing can arrive later.
    assert len(delivered(auth_relay_lab, "nopr")) == before


async def test_credentials_without_starttls_find_no_auth(auth_relay_lab: MailLab) -> None:
    relay = Relay(submission(auth_relay_lab, USER, PASSWORD, starttls=False))
    result = await relay.send("ann@acme.test", ["tls@inbox.test"], b"Subject: x\r\n\r\nx\r\n")
    assert result.outcome is RelayOutcome.TEMPORARY
    assert result.reply == "relay offers no AUTH we can use (credentials configured)"
    assert PASSWORD not in result.reply


def test_a_relay_echoing_the_password_never_gets_it_into_the_reply() -> None:
    """A relay may quote what it was sent; the reason we keep must not carry the secret."""
    from server.mail.relay import _connect_failure

    config = RelayConfig(host="relay.test", username=USER, password=PASSWORD)
    exc = aiosmtplib.SMTPAuthenticationError(535, f"5.7.8 bad secret {PASSWORD} " + "x" * 400)
    result = _connect_failure(exc, config)
    assert result.outcome is RelayOutcome.TEMPORARY
    assert result.code == 535
    assert PASSWORD not in result.reply
    assert result.reply.startswith("relay refused our credentials: 5.7.8 bad secret [redacted]")
    assert len(result.reply) <= 300
