"""Helpers of the sequencer tests: an advanceable clock, verified sending domains and aliases
written as rows, and a sequencer on a test MailService (test DKIM key, the real suppression
list) — the message build, signature and outbox insert are the platform's own."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from factory import CampaignIds, StepSpec, make_campaign
from mail_support import identities

from server.campaigns.holds import Thresholds
from server.campaigns.sequencer import Sequencer
from server.db.engine import Database
from server.db.models import MailAlias, MailDomain
from server.db.tx import write_transaction
from server.ids import new_id
from server.mail.outbox import Outbox
from server.mail.service import MailService
from server.suppression.store import SuppressionStore

BASE_URL = "https://bavlio.test"
KEY = b"k" * 32
MONDAY_NOON = 1_797_249_600.0  # 2026-12-14 12:00 UTC, a Monday


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = MONDAY_NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


async def make_aliases(
    db: Database,
    user_id: str,
    domain: str = "acme.test",
    locals_: Sequence[str] = ("sales",),
    verified: bool = True,
) -> list[str]:
    """A sending domain (verified or not) with one alias per local part; the alias ids."""
    now = time.time()
    domain_id = new_id("dom")
    ids = [new_id("als") for _ in locals_]
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            sa.insert(MailDomain).values(
                id=domain_id,
                user_id=user_id,
                name=domain,
                dkim_keys=[],
                tracking=False,
                inbound=True,
                status="verified" if verified else "pending",
                checks=None,
                checked_at=None,
                verified_at=now if verified else None,
                created_at=now,
                updated_at=now,
            )
        )
        for alias_id, local in zip(ids, locals_, strict=True):
            await conn.execute(
                sa.insert(MailAlias).values(
                    id=alias_id,
                    user_id=user_id,
                    domain_id=domain_id,
                    local_part=local,
                    display_name=None,
                    reply_to=None,
                    forwarding=[],
                    created_at=now,
                    updated_at=now,
                )
            )
    return ids


async def launched(
    db: Database,
    clock: Clock,
    user_id: str,
    *,
    steps: Sequence[StepSpec],
    leads: Sequence[Mapping[str, Any]],
    aliases: Sequence[str] | None = None,
    **columns: Any,
) -> CampaignIds:
    """An active campaign as camp-api's launch leaves it (leads active, due now), sending from
    ``aliases`` (one new verified alias when None); ``columns`` as for ``make_campaign``."""
    if aliases is None:
        aliases = await make_aliases(db, user_id)
    return await make_campaign(
        db,
        user_id=user_id,
        status="active",
        lead_status="active",
        due_at=clock.now,
        sender_alias_ids=aliases,
        steps=steps,
        leads=leads,
        now=clock.now,
        **columns,
    )


async def set_domain_status(db: Database, domain: str, status: str) -> None:
    """Flip a sending domain's verification status (as a DNS check would)."""
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            sa.update(MailDomain).where(MailDomain.name == domain).values(status=status)
        )


def sequencer(
    db: Database,
    clock: Clock,
    domains: Sequence[str] = ("acme.test",),
    thresholds: Thresholds | None = None,
    batch: int = 500,
) -> Sequencer:
    """A sequencer on ``db`` whose identities sign for ``domains`` with the test key."""
    store = SuppressionStore(db.engine)

    async def suppressed(user_id: str, addresses: Sequence[str]) -> dict[str, str]:
        found = await store.is_suppressed(user_id, addresses)
        return {a: f"suppressed: {e.source}" for a, e in found.items() if e is not None}

    mail = MailService(
        Outbox(db), identity=identities(domains), suppression=suppressed, clock=clock
    )
    return Sequencer(
        db,
        mail,
        base_url=BASE_URL,
        key=KEY,
        clock=clock,
        thresholds=thresholds or Thresholds(),
        batch=batch,
    )
