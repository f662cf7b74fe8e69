"""End to end against the lab's real Postfix and our inbound endpoint: a 3-step campaign over
50 lab leads, sent by the outbox worker through Postfix, with the sequencer's clock advanced
a day per step. Five leads are on a domain Postfix accepts and then bounces (real DSNs to the
campaign's bounce address, relayed by Postfix into the endpoint); five leads reply and two send
out-of-office answers (real messages submitted to Postfix, relayed into the endpoint). The
sequence stops exactly for the replies and bounces; every delivered message verifies DKIM."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP
from factory import StepSpec, make_campaign
from inbound_mail.inbound_helpers import free_port
from lab.maillab import Listener, MailDomain, MailLab
from mail_support import dkim_dns, identities
from sequencer_support import BASE_URL, KEY, Clock, make_aliases

from server.auth.store import AccountStore
from server.campaigns.holds import Thresholds
from server.campaigns.sequencer import Sequencer
from server.campaigns.stops import with_campaign_stops
from server.db.engine import Database
from server.db.models import Campaign, CampaignEvent, CampaignLead, InboundEmail
from server.mail.inbound_service import InboundMail
from server.mail.inbound_smtp import inbound_server
from server.mail.outbox import Outbox
from server.mail.relay import Relay, RelayConfig
from server.mail.service import MailService
from server.mail.worker import MailWorker
from server.settings import Settings
from server.suppression.store import SuppressionStore

pytestmark = pytest.mark.lab

LIVE = 45
LEADS = [f"lead{i}@inbox.test" for i in range(LIVE)] + [f"ghost{i}@ghost.test" for i in range(5)]
REPLIERS = range(5)
OUT_OF_OFFICE = (5, 6)
GUARD = 90.0  # seconds: a hang guard, not a timing assertion
SENDMAIL = "/usr/sbin/sendmail"


class Lab:
    """The lab Postfix: inbox.test mailboxes; ghost.test accepted, then refused by its MX
    (:func:`ghost_mx` on ``ghost_port``: 550 5.1.1, so Postfix returns a DSN); acme.test (our
    sending domain) relayed to our inbound endpoint on ``port``."""

    def __init__(self, lab: MailLab, port: int, ghost_port: int) -> None:
        self.lab = lab
        self.port = port
        self.ghost_port = ghost_port
        assert lab.dir is not None
        self.etc = str(lab.dir / "etc")

    def configure(self) -> None:
        transport = Path(self.etc) / "transport"
        transport.write_text(
            f"acme.test smtp:[127.0.0.1]:{self.port}\n"
            f"ghost.test smtp:[127.0.0.1]:{self.ghost_port}\n"
        )
        subprocess.run(["/usr/sbin/postmap", "-c", self.etc, f"hash:{transport}"], check=True)
        settings = [
            f"transport_maps = hash:{transport}",
            "relay_domains = ghost.test",
            "smtp_tls_security_level = none",
        ]
        subprocess.run(["/usr/sbin/postconf", "-c", self.etc, "-e", *settings], check=True)
        subprocess.run(["/usr/sbin/postfix", "-c", self.etc, "reload"], check=True)

    async def submit(self, sender: str, recipient: str, raw: bytes) -> None:
        """A message handed to Postfix (sendmail -> pickup), as a lead's mail client would."""
        proc = await asyncio.create_subprocess_exec(
            SENDMAIL, "-C", self.etc, "-f", sender, recipient, stdin=subprocess.PIPE
        )
        await proc.communicate(raw)
        assert proc.returncode == 0

    def log(self) -> str:
        """The Postfix log lines about anything but plain deliveries to inbox.test."""
        lines = self.lab.log_path.read_text(errors="replace").splitlines()
        noise = ("inbox.test", "client=unknown", ": removed", "cleanup[", "queue active")
        return "\n".join(x for x in lines if not any(n in x for n in noise))[-4000:]


class _NoSuchUser:
    """aiosmtpd hooks of an MX that knows no mailbox."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


@contextlib.asynccontextmanager
async def ghost_mx(port: int) -> AsyncIterator[None]:
    """An SMTP server on 127.0.0.1:``port`` refusing every recipient as unknown."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_NoSuchUser(), hostname="mx.ghost.test"), host="127.0.0.1", port=port
    )
    try:
        yield
    finally:
        server.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    maillab = MailLab(
        listeners=[Listener("relay", "mx.relay.test", 2, profile="bench")],
        domains=[
            MailDomain(
                "inbox.test", mx=("relay",), users=tuple(a.split("@")[0] for a in LEADS[:LIVE])
            )
        ],
        tls=False,
    )
    maillab.start()
    try:
        running = Lab(maillab, free_port(), free_port())
        running.configure()
        yield running
    finally:
        maillab.stop()


async def _until(check: Any, what: str, lab: Lab) -> None:
    deadline = time.monotonic() + GUARD
    while not await check():
        assert time.monotonic() < deadline, f"no {what}; Postfix log:\n{lab.log()}"
        await asyncio.sleep(0.1)


async def _leads(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(CampaignLead))).mappings().all()
    return {row["email"]: row for row in rows}


def _answer(lead: str, to: str, thread: str, *, ooo: bool) -> bytes:
    msg = EmailMessage()
    msg["From"] = lead
    msg["To"] = to
    msg["Subject"] = "Out of office" if ooo else "Re: Hi"
    msg["Message-ID"] = f"<answer.{lead.replace('@', '.')}@inbox.test>"
    msg["In-Reply-To"] = thread
    msg["References"] = thread
    if ooo:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("I am away." if ooo else "Interested, let's talk.")
    return msg.as_bytes()


def _mailbox(lab: Lab, address: str) -> list[bytes]:
    """The messages delivered to a lab mailbox so far."""
    local, domain = address.split("@")
    assert lab.lab.dir is not None
    box = lab.lab.dir / "mail" / domain / local
    files = [f for sub in ("new", "cur") if (box / sub).is_dir() for f in (box / sub).iterdir()]
    return [f.read_bytes() for f in sorted(files)]


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_three_step_campaign_over_the_lab(
    settings: Settings, tmp_path: Path, lab: Lab
) -> None:
    db = Database(settings.database_url)
    await db.migrate()
    try:
        await _run(db, settings, tmp_path, lab)
    finally:
        await db.dispose()


async def _run(db: Database, settings: Settings, tmp_path: Path, lab: Lab) -> None:
    clock = Clock(time.time())
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        "e2e", email=None, plan="paid"
    )
    aliases = await make_aliases(db, user.id, locals_=("sales", "team"))
    steps = (
        StepSpec(0, ({"label": "A", "subject": "Hi {{name}}", "text": "First, {{name}}."},)),
        StepSpec(86400, ({"label": "A", "subject": "Following up", "text": "Second."},)),
        StepSpec(86400, ({"label": "A", "subject": "Last one", "text": "Third."},)),
    )
    await make_campaign(
        db,
        user_id=user.id,
        status="active",
        lead_status="active",
        due_at=clock.now,
        sender_alias_ids=aliases,
        steps=steps,
        leads=[{"email": a, "name": a.split("@")[0]} for a in LEADS],
        now=clock.now,
    )
    suppression = SuppressionStore(db.engine)

    async def suppressed(user_id: str, addresses: Any) -> dict[str, str]:
        found = await suppression.is_suppressed(user_id, addresses)
        return {a: "suppressed" for a, e in found.items() if e is not None}

    mail = MailService(Outbox(db), identity=identities({"acme.test"}), suppression=suppressed)
    # 5 bounces in 50 is 10 %: over the default 5 % the campaign would be held (as it should).
    lenient = Thresholds(bounce_rate=0.2, min_sends=50)
    sequencer = Sequencer(db, mail, base_url=BASE_URL, key=KEY, clock=clock, thresholds=lenient)
    inbound = with_campaign_stops(
        InboundMail.build(settings.model_copy(update={"mail_storage_dir": tmp_path}), db.engine)
    )
    relay = RelayConfig(host=lab.lab.ip("relay"), port=25, starttls=False, timeout=15)
    worker = MailWorker(mail.outbox, lambda: Relay(relay), poll_seconds=0.1, batch=50)
    async with (
        inbound_server(inbound.handler(), "127.0.0.1", lab.port),
        ghost_mx(lab.ghost_port),
        worker,
    ):
        assert (await sequencer.tick()).queued == 50

        async def first_step_settled() -> bool:
            leads = await _leads(db)
            bounced = [a for a, row in leads.items() if row["stop_reason"] == "bounced"]
            got = sum(len(_mailbox(lab, a)) for a in LEADS[:LIVE])
            return len(bounced) == 5 and got == LIVE

        await _until(first_step_settled, "first step delivered and bounced", lab)
        leads = await _leads(db)
        for i in (*REPLIERS, *OUT_OF_OFFICE):
            address = LEADS[i]
            thread = leads[address]["thread_message_id"]
            raw = _answer(address, "sales@acme.test", thread, ooo=i in OUT_OF_OFFICE)
            await lab.submit(address, "sales@acme.test", raw)

        async def answers_filed() -> bool:
            async with db.engine.connect() as conn:
                n = (
                    await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(InboundEmail)
                        .where(InboundEmail.kind == "message")
                    )
                ).scalar_one()
            return int(n) >= len(REPLIERS) + len(OUT_OF_OFFICE)

        await _until(answers_filed, "replies relayed into the endpoint", lab)
        for _ in range(2):
            clock.advance(86400)
            assert (await sequencer.tick()).queued == LIVE - len(REPLIERS)

        async def all_delivered() -> bool:
            return sum(len(_mailbox(lab, a)) for a in LEADS[:LIVE]) == LIVE + 2 * (
                LIVE - len(REPLIERS)
            )

        await _until(all_delivered, "second and third steps delivered", lab)

    leads = await _leads(db)
    stopped = {a: row["stop_reason"] for a, row in leads.items() if row["status"] == "stopped"}
    assert stopped == {
        **{LEADS[i]: "replied" for i in REPLIERS},
        **{a: "bounced" for a in LEADS[LIVE:]},
    }
    assert {row["status"] for a, row in leads.items() if a not in stopped} == {"completed"}
    async with db.engine.connect() as conn:
        status = (await conn.execute(sa.select(Campaign.status))).scalar_one()
        events = Counter((await conn.execute(sa.select(CampaignEvent.kind))).scalars().all())
    assert status == "completed"
    assert events == {"replied": 5, "bounced": 5}
    for i, address in enumerate(LEADS[:LIVE]):
        box = [parse(raw) for raw in _mailbox(lab, address)]
        assert len(box) == (1 if i in REPLIERS else 3)
        first = next(m for m in box if m["In-Reply-To"] is None)
        for raw in _mailbox(lab, address):
            assert dkim.verify(raw, dnsfunc=dkim_dns)
        for msg in box:
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            if msg is not first:
                assert msg["In-Reply-To"] == first["Message-ID"]
        assert len({m["From"] for m in box}) == 1  # the lead's alias is sticky
