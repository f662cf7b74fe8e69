"""Inbound mail against the lab's real Postfix: Postfix relays mail into our endpoint, and the
DSNs Postfix itself generates (unknown mailbox, unresolvable domain, a recipient our endpoint
refuses) come back to the bounce address, are parsed and reach suppression; a DSN read from a
lab mailbox parses field by field."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from inbound_helpers import Endpoint, free_port, make_users, message, running_endpoint
from lab.maillab import Listener, MailDomain, MailLab

from server.db.engine import Database
from server.mail.dsn import parse_dsn
from server.mail.inbound_smtp import InboundConfig

pytestmark = pytest.mark.lab

SENDMAIL = "/usr/sbin/sendmail"
POSTCONF = "/usr/sbin/postconf"
UNRESOLVABLE = "someone@nonexistent-domain-xyz.invalid"


class PostfixLab:
    """A lab Postfix whose mail for acme.test, rp.acme.test and unrouted.test goes to
    127.0.0.1:``port`` (our endpoint) and everything else through DNS-less SMTP."""

    def __init__(self, lab: MailLab, port: int) -> None:
        self.lab = lab
        self.port = port
        assert lab.dir is not None
        self.etc = str(lab.dir / "etc")

    def configure(self) -> None:
        transport = Path(self.etc) / "transport"
        transport.write_text(
            "".join(
                f"{domain} smtp:[127.0.0.1]:{self.port}\n"
                for domain in ("acme.test", "rp.acme.test", "unrouted.test")
            )
        )
        subprocess.run(["/usr/sbin/postmap", "-c", self.etc, f"hash:{transport}"], check=True)
        settings = [
            "default_transport = smtp",
            f"transport_maps = hash:{transport}",
            "smtp_tls_security_level = none",
        ]
        subprocess.run([POSTCONF, "-c", self.etc, "-e", *settings], check=True)
        subprocess.run(["/usr/sbin/postfix", "-c", self.etc, "reload"], check=True)

    async def submit(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Hand a message to Postfix as a local submission (sendmail -> pickup)."""
        proc = await asyncio.create_subprocess_exec(
            SENDMAIL, "-C", self.etc, "-f", sender, *recipients, stdin=subprocess.PIPE
        )
        await proc.communicate(raw)
        assert proc.returncode == 0

    def maildir(self, address: str) -> list[Path]:
        """The delivered files of a lab mailbox."""
        local, domain = address.split("@")
        assert self.lab.dir is not None
        return sorted((self.lab.dir / "mail" / domain / local / "new").glob("*"))

    def log(self) -> str:
        return self.lab.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixLab]:
    lab = MailLab(
        listeners=[Listener("main", "mx.company.test", 2)],
        domains=[MailDomain("company.test")],
        tls=False,
    )
    lab.start()
    try:
        running = PostfixLab(lab, free_port())
        running.configure()
        yield running
    finally:
        lab.stop()


async def _until(check: object, what: str, postfix: PostfixLab, seconds: float = 60) -> None:
    """Wait for ``check()`` (an async predicate) to hold: a bound, not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what}; Postfix log:\n{postfix.log()[-3000:]}"
        await asyncio.sleep(0.1)


def _config() -> InboundConfig:
    return InboundConfig(bounce_domains=frozenset({"rp.acme.test"}))


async def test_postfix_relays_a_reply_into_the_endpoint(
    db: Database, tmp_path: Path, postfix: PostfixLab
) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(
        db, tmp_path, {"acme.test": ann}, config=_config(), port=postfix.port
    ) as ep:
        conv = await ep.store.link_outbound(
            ann, sent_message_id="msg_1", message_id="offer1@acme.test", subject="Offer"
        )
        reply = message(
            sender="Bob <bob@company.test>",
            subject="Re: Offer",
            message_id="<reply1@company.test>",
            in_reply_to="<offer1@acme.test>",
            attachment=b"%PDF-1.4 signed",
        )
        await postfix.submit("bob@company.test", ["ann@acme.test"], reply)

        async def arrived() -> bool:
            return bool(await ep.store.list_inbound(ann, after=None, offset=0, limit=5))

        await _until(arrived, "relayed message", postfix)
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=5)
        assert row.conversation_id == conv
        assert row.mail_from == "bob@company.test"
        assert row.subject == "Re: Offer"
        assert row.attachments[0]["filename"] == "offer.pdf"
        raw = await ep.raw.get(row.raw_key)
        assert raw is not None
        assert b"by mx.mail-lab.test (Postfix" in raw  # Postfix's Received header


async def test_real_postfix_dsns_reach_suppression(
    db: Database, tmp_path: Path, postfix: PostfixLab
) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(
        db, tmp_path, {"acme.test": ann}, config=_config(), port=postfix.port
    ) as ep:
        await ep.store.link_outbound(ann, sent_message_id="msg_2", message_id="offer2@acme.test")
        recipients = ["nobody@company.test", UNRESOLVABLE, "refused@unrouted.test"]
        original = message(
            sender="ann@acme.test", to=", ".join(recipients), message_id="<offer2@acme.test>"
        )
        await postfix.submit("bounces+msg_2@rp.acme.test", recipients, original)

        async def bounced() -> bool:
            return len(await ep.store.bounces_of("msg_2")) >= 3

        await _until(bounced, "DSN for all three recipients", postfix)
        _check_bounces(ep, ann, await ep.store.bounces_of("msg_2"))
        dsns = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert {row.kind for row in dsns} == {"dsn"}
        assert all(row.rcpt_to == ["bounces+msg_2@rp.acme.test"] for row in dsns)
        assert all(row.mail_from == "" for row in dsns)  # DSNs come from the null sender


def _check_bounces(ep: Endpoint, ann: str, bounces: list[dict[str, object]]) -> None:
    by_recipient = {b["recipient"]: b for b in bounces}
    assert set(by_recipient) == {"nobody@company.test", UNRESOLVABLE, "refused@unrouted.test"}
    assert (
        by_recipient["nobody@company.test"]["kind"],
        by_recipient["nobody@company.test"]["status"],
    ) == ("hard", "5.1.1")
    assert (by_recipient[UNRESOLVABLE]["kind"], by_recipient[UNRESOLVABLE]["status"]) == (
        "hard",
        "5.4.4",
    )
    refused = by_recipient["refused@unrouted.test"]
    assert (refused["kind"], refused["status"]) == ("policy", "5.7.1")
    assert str(refused["diagnostic"]).startswith("smtp; 550 5.7.1")  # our endpoint's reply
    assert sorted(ep.suppression.entries) == [
        (ann, "nobody@company.test", "5.1.1", "msg_2"),
        (ann, UNRESOLVABLE, "5.4.4", "msg_2"),
    ]


async def test_a_dsn_from_a_lab_mailbox_parses(postfix: PostfixLab) -> None:
    before = len(postfix.maildir("postmaster@company.test"))
    original = message(
        sender="postmaster@company.test", to="ghost@company.test", message_id="<lost1@company.test>"
    )
    await postfix.submit("postmaster@company.test", ["ghost@company.test"], original)
    deadline = time.monotonic() + 60
    while len(postfix.maildir("postmaster@company.test")) <= before:
        assert time.monotonic() < deadline, postfix.log()[-3000:]
        await asyncio.sleep(0.1)
    raw = postfix.maildir("postmaster@company.test")[-1].read_bytes()
    report = parse_dsn(raw)
    assert report.reporting_mta == "mx.mail-lab.test"
    assert report.original_message_id == "lost1@company.test"
    (recipient,) = report.recipients
    assert recipient.final_recipient == "ghost@company.test"
    assert recipient.action == "failed"
    assert recipient.status == "5.1.1"
    assert recipient.kind == "hard"
    assert recipient.diagnostic_code is not None
    assert "unknown user" in recipient.diagnostic_code
