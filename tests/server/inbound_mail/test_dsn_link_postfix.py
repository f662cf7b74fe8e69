"""Bounces link back to the message that caused them, end to end through the lab's real
Postfix: the outbox sends with a VERP return path (``bounces+<email id>@bounces.acme.test``),
Postfix accepts the recipients and then fails them (a gone mailbox: hard 5.1.1; a full one:
soft 5.2.2), its own DSNs travel to our endpoint, and each bounce is stored against the sent
message (hard ones suppressed), the delivered recipient untouched."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from inbound_helpers import Endpoint, free_port, make_users, running_endpoint
from lab.maillab import Listener, MailDomain, MailLab
from mail_support import SELECTOR, FakeIdentity, signing_key

from server.db.engine import Database
from server.mail.inbound_smtp import InboundConfig
from server.mail.message import Draft
from server.mail.outbox import Outbox
from server.mail.relay import Relay, RelayConfig
from server.mail.service import MailService
from server.mail.worker import MailWorker

pytestmark = pytest.mark.lab

POSTMAP = "/usr/sbin/postmap"
POSTCONF = "/usr/sbin/postconf"


class BouncingLab:
    """A lab Postfix for company.test whose ``gone`` and ``full`` mailboxes fail after the
    message is accepted, and whose mail for bounces.acme.test goes to our endpoint."""

    def __init__(self, lab: MailLab, port: int) -> None:
        self.lab = lab
        self.port = port
        assert lab.dir is not None
        self.etc = lab.dir / "etc"

    def configure(self) -> None:
        transport = self.etc / "transport"
        transport.write_text(
            "gone@company.test error:5.1.1 mailbox unavailable\n"
            "full@company.test error:5.2.2 mailbox full\n"
            f"bounces.acme.test smtp:[127.0.0.1]:{self.port}\n"
        )
        subprocess.run([POSTMAP, "-c", str(self.etc), f"hash:{transport}"], check=True)
        settings = [
            f"transport_maps = hash:{transport}",
            # Accept at RCPT (smtpd would refuse an error-transport address up front), so the
            # failures come later, as Postfix's own DSNs.
            "smtpd_reject_unlisted_recipient = no",
            "smtpd_recipient_restrictions =",
        ]
        subprocess.run([POSTCONF, "-c", str(self.etc), "-e", *settings], check=True)
        subprocess.run(["/usr/sbin/postfix", "-c", str(self.etc), "reload"], check=True)

    def log(self) -> str:
        return self.lab.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def bouncing() -> Iterator[BouncingLab]:
    lab = MailLab(
        listeners=[Listener("main", "mx.company.test", 2, profile="bench")],
        domains=[MailDomain("company.test", users=("gone", "full", "ok"))],
        tls=False,
    )
    lab.start()
    try:
        running = BouncingLab(lab, free_port())
        running.configure()
        yield running
    finally:
        lab.stop()


async def _identity(user_id: str, from_address: str) -> FakeIdentity:
    return FakeIdentity(
        domain="acme.test",
        selector=SELECTOR,
        private_key_pem=signing_key()[0],
        return_path="bounces.acme.test",
    )


async def _until(check: object, what: str, lab: BouncingLab, seconds: float = 60) -> None:
    """Wait for ``check()`` (an async predicate) to hold: a bound, not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what}; Postfix log:\n{lab.log()[-3000:]}"
        await asyncio.sleep(0.1)


async def test_postfix_bounces_link_to_the_sent_email(
    db: Database, tmp_path: Path, bouncing: BouncingLab
) -> None:
    (ann,) = await make_users(db, "ann")
    outbox = Outbox(db)
    mail = MailService(outbox, identity=_identity)
    hard = await mail.submit(
        ann,
        Draft(
            from_="ann@acme.test",
            to=["gone@company.test", "ok@company.test"],
            subject="Offer",
            text="Hi\n",
        ),
    )
    soft = await mail.submit(
        ann, Draft(from_="ann@acme.test", to=["full@company.test"], subject="Offer", text="Hi\n")
    )
    config = InboundConfig(return_path_subdomain="bounces")
    async with running_endpoint(
        db, tmp_path, {"acme.test": ann}, config=config, port=bouncing.port
    ) as ep:
        relay = RelayConfig(host=bouncing.lab.ip("main"), starttls=False)
        async with MailWorker(outbox, lambda: Relay(relay), poll_seconds=0.05):

            async def bounced() -> bool:
                return bool(await ep.store.bounces_of(hard.id)) and bool(
                    await ep.store.bounces_of(soft.id)
                )

            await _until(bounced, "DSNs for both messages", bouncing)
        await _check(ep, ann, hard.id, soft.id, outbox)


async def _check(ep: Endpoint, ann: str, hard_id: str, soft_id: str, outbox: Outbox) -> None:
    (gone,) = await ep.store.bounces_of(hard_id)
    assert (gone["recipient"], gone["kind"], gone["status"]) == (
        "gone@company.test",
        "hard",
        "5.1.1",
    )
    assert "mailbox unavailable" in str(gone["diagnostic"])
    (full,) = await ep.store.bounces_of(soft_id)
    assert (full["recipient"], full["kind"], full["status"]) == (
        "full@company.test",
        "soft",
        "5.2.2",
    )
    # Only the hard bounce is suppressed; the delivered recipient is never touched.
    assert ep.suppression.entries == [(ann, "gone@company.test", "5.1.1", hard_id)]
    dsns = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
    assert sorted(row.rcpt_to[0] for row in dsns) == sorted(
        f"bounces+{i.lower()}@bounces.acme.test" for i in (hard_id, soft_id)
    )
    assert {row.kind for row in dsns} == {"dsn"}
    sent = await outbox.get(ann, hard_id)
    assert sent is not None
    assert sent.relay_queue_id  # the relay's queue id, as the DSN's X-Postfix-Queue-ID
