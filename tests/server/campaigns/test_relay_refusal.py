"""A relay's refusal at send time, on SQLite and PostgreSQL, through the mail worker as deployed
(its outbox's refusal hook, server.campaigns.stops.on_refused): against the lab's Postfix (an
unknown mailbox refused 550 at RCPT stops its lead, a known one is delivered), and with a
scripted relay for the cases Postfix will not produce on demand: a
permanent refusal of the recipient stops the lead ``bounced`` with one event (and the message's
``email.failed`` webhook, once), a later hard-bounce DSN of the same message adds nothing; a
temporary refusal leaves the lead running; an ordinary send failure (not per recipient) does
not stop it either."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from factory import StepSpec, make_user
from lab.maillab import MailLab
from sequencer_support import Clock, launched, sequencer

from server.campaigns.stops import on_bounce, on_refused
from server.db.engine import Database
from server.db.models import (
    CampaignEvent,
    CampaignLead,
    CampaignSend,
    MailMessage,
    WebhookDelivery,
    WebhookEndpoint,
)
from server.db.tx import write_transaction
from server.mail.outbox import Outbox
from server.mail.outbox_rules import RelayOutcome
from server.mail.relay import Opened, Relay, RelayConfig, RelayResult
from server.mail.worker import MailWorker

_MAIL_TESTS = str(Path(__file__).resolve().parent.parent / "mail")
if _MAIL_TESTS not in sys.path:  # its helper module (the folder is no package)
    sys.path.append(_MAIL_TESTS)

from mail_lab_support import started_relay_lab  # noqa: E402

ANSWERS: dict[str, tuple[RelayOutcome, int, str] | None] = {
    "p0@dest.test": (RelayOutcome.PERMANENT, 550, "5.1.1 no such user"),
    "p1@dest.test": (RelayOutcome.TEMPORARY, 450, "4.2.1 try later"),
    "p2@dest.test": None,  # accepted
}


class ScriptedRelay:
    """Answers RCPT per recipient from ANSWERS (and DATA with 550 for p3: not per recipient)."""

    async def open(self, envelope_from: str, recipients: Sequence[str]) -> Opened | RelayResult:
        """Every recipient refused as scripted, or the transaction open."""
        answers = {r: a for r in recipients if (a := ANSWERS.get(r)) is not None}
        if answers and len(answers) == len(recipients):
            outcome, code, _ = next(iter(answers.values()))
            refused = {r: f"{c} {t}" for r, (_, c, t) in answers.items()}
            return RelayResult(outcome, code, "every recipient refused", None, refused)
        return Opened(cast(Any, recipients), {})

    async def data(self, opened: Opened, raw: bytes) -> RelayResult:
        """Accepted, except for p3 (a content refusal)."""
        if "p3@dest.test" in cast(Any, opened.smtp):
            return RelayResult(RelayOutcome.PERMANENT, 554, "5.7.1 content refused")
        return RelayResult(RelayOutcome.ACCEPTED, 250, "2.0.0 Ok: queued as ABC123", "ABC123")

    async def abandon(self, opened: Opened) -> None:
        """Nothing to reset."""

    async def close(self) -> None:
        """Nothing to close."""


async def _rows(db: Database, table: Any, *where: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(sa.select(table).where(*where))).mappings().all())


async def _endpoint(db: Database, user: str) -> None:
    now = time.time()
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            sa.insert(WebhookEndpoint).values(
                id="whe_test",
                user_id=user,
                url="https://hooks.test/x",
                description="",
                event_types=[],
                secret_sealed="x",
                enabled=True,
                consecutive_failures=0,
                created_at=now,
                updated_at=now,
            )
        )


async def test_a_permanent_refusal_stops_the_lead_once(db: Database) -> None:
    clock = Clock()
    user = await make_user(db)
    await _endpoint(db, user)
    ids = await launched(
        db,
        clock,
        user,
        steps=(StepSpec(0), StepSpec(3600)),
        leads=[{"email": f"p{i}@dest.test"} for i in range(4)],
    )
    assert (await sequencer(db, clock).tick()).queued == 4
    relay = ScriptedRelay()
    worker = MailWorker(Outbox(db, on_refused=on_refused), lambda: cast(Relay, relay), clock=clock)
    while await worker.run_once(cast(Relay, relay)):
        pass
    by_email = {r["email"]: r for r in await _rows(db, CampaignLead)}
    assert (by_email["p0@dest.test"]["status"], by_email["p0@dest.test"]["stop_reason"]) == (
        "stopped",
        "bounced",
    )
    assert by_email["p0@dest.test"]["due_at"] is None
    for other in ("p1@dest.test", "p2@dest.test", "p3@dest.test"):
        assert by_email[other]["status"] == "active", other  # temporary, sent, content refusal
    [event] = await _rows(db, CampaignEvent)
    lead0 = by_email["p0@dest.test"]["id"]
    [send] = await _rows(db, CampaignSend, CampaignSend.lead_id == lead0)
    assert (event["lead_id"], event["kind"], event["email_id"]) == (
        lead0,
        "bounced",
        send["email_id"],
    )
    assert event["detail"] == {"status": "550 5.1.1 no such user", "source": "relay"}
    [failed] = await _rows(db, MailMessage, MailMessage.id == send["email_id"])
    assert (failed["state"], failed["error_code"]) == ("failed", "relay_rejected")
    hooks = await _rows(db, WebhookDelivery, WebhookDelivery.event_type == "email.failed")
    assert len([h for h in hooks if send["email_id"] in h["body"]]) == 1

    # raised again (a retried write) or followed by the relay's DSN: nothing new
    async with write_transaction(db.engine) as conn:
        await on_refused(conn, user, send["email_id"], {"p0@dest.test": "550 x"}, clock.now)
    assert not await on_bounce(db.engine, user, send["email_id"], "5.1.1")
    assert len(await _rows(db, CampaignEvent)) == 1
    # another user's id, or a message that is no campaign send: nothing
    async with write_transaction(db.engine) as conn:
        await on_refused(conn, "usr_other", send["email_id"], {"p0@dest.test": "550"}, clock.now)
        await on_refused(conn, user, "eml_none", {"p0@dest.test": "550"}, clock.now)
    assert len(await _rows(db, CampaignEvent)) == 1
    assert ids.campaign_id == event["campaign_id"]


@pytest.fixture(scope="module")
def relay_lab() -> Iterator[MailLab]:
    """Postfix as the relay for this module."""
    yield from started_relay_lab()


@pytest.mark.lab
async def test_postfix_refusing_an_unknown_mailbox_stops_its_lead(
    db: Database, relay_lab: MailLab
) -> None:
    clock = Clock()
    user = await make_user(db)
    ids = await launched(
        db,
        clock,
        user,
        steps=(StepSpec(0), StepSpec(3600)),
        leads=[{"email": "nobody@inbox.test"}, {"email": "part@inbox.test"}],
    )
    assert (await sequencer(db, clock).tick()).queued == 2
    relay = Relay(RelayConfig(host=relay_lab.ip("relay"), port=25, starttls=False, timeout=15))
    worker = MailWorker(Outbox(db, on_refused=on_refused), lambda: relay, clock=clock)
    while await worker.run_once(relay):
        pass
    await relay.close()
    by_email = {r["email"]: r for r in await _rows(db, CampaignLead)}
    assert by_email["nobody@inbox.test"]["stop_reason"] == "bounced"
    assert by_email["part@inbox.test"]["status"] == "active"
    [event] = await _rows(db, CampaignEvent)
    assert (event["campaign_id"], event["kind"]) == (ids.campaign_id, "bounced")
    assert event["detail"]["status"].startswith("550")
