"""Inbound mail's real ports on SQLite and PostgreSQL: recipients route to the user whose
verified domain has inbound on, and hard bounces land in that user's suppression list."""

from __future__ import annotations

import time

from sqlalchemy import insert

from server.auth.store import AccountStore
from server.db.engine import Database
from server.db.models import MailDomain
from server.db.tx import write_transaction
from server.mail.inbound_wiring import DomainRouting, SuppressionListSink
from server.suppression.store import SuppressionStore


async def _user(db: Database, subject: str) -> str:
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        subject, email=None, plan="paid"
    )
    return user.id


async def _domain(
    db: Database, user_id: str, name: str, *, status: str, inbound: bool, verified_at: float
) -> None:
    now = time.time()
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            insert(MailDomain).values(
                id=f"dom_{name.replace('.', '')[:8]}{user_id[-6:]}",
                user_id=user_id,
                name=name,
                dkim_keys=[],
                tracking=False,
                inbound=inbound,
                status=status,
                checks=None,
                checked_at=None,
                verified_at=verified_at,
                created_at=now,
                updated_at=now,
            )
        )


async def test_routing_takes_verified_domains_with_inbound_on(db: Database) -> None:
    ann, bob, eve = await _user(db, "ann"), await _user(db, "bob"), await _user(db, "eve")
    await _domain(db, ann, "acme.test", status="verified", inbound=True, verified_at=100.0)
    await _domain(db, bob, "quiet.test", status="verified", inbound=False, verified_at=100.0)
    await _domain(db, bob, "pending.test", status="not_started", inbound=True, verified_at=0.0)
    await _domain(db, eve, "acme.test", status="pending", inbound=True, verified_at=50.0)
    routing = DomainRouting(db.engine)
    assert await routing.owner("ACME.test.") == ann
    assert await routing.owner("quiet.test") is None
    assert await routing.owner("pending.test") is None
    assert await routing.owner("nowhere.test") is None


async def test_hard_bounces_are_suppressed_once(db: Database) -> None:
    ann = await _user(db, "ann")
    store = SuppressionStore(db.engine)
    sink = SuppressionListSink(store)
    await sink.add_hard_bounce(ann, "Gone@Acme.Test", status="5.1.1", sent_message_id="eml_1")
    await sink.add_hard_bounce(ann, "gone@acme.test", status="5.1.1", sent_message_id="eml_2")
    await sink.add_hard_bounce(ann, "not an address", status="5.1.1", sent_message_id=None)
    found = await store.is_suppressed(ann, ["gone@acme.test", "other@acme.test"])
    entry = found["gone@acme.test"]
    assert entry is not None
    assert (entry.source, entry.reason) == ("bounce", "hard bounce 5.1.1 (message eml_1)")
    assert found["other@acme.test"] is None
