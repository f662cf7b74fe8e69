"""The inbound store's ``after_add`` hooks on SQLite and PostgreSQL: each runs, in order, on the
row just committed (DSNs included, with their kind); campaign stops plug in beside hooks already
there; a failing hook reaches the caller with the message already stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from inbound_helpers import make_users, message

from server.campaigns.stops import CampaignBounceSink, on_reply, with_campaign_stops
from server.db.engine import Database
from server.mail.inbound_parse import parse_message
from server.mail.inbound_service import InboundMail
from server.mail.inbound_store import InboundRow, InboundStore
from server.settings import load_settings


async def _add(store: InboundStore, user_id: str, inbound_id: str, kind: str) -> InboundRow:
    return await store.add(
        user_id,
        inbound_id=inbound_id,
        parsed=parse_message(message(in_reply_to="<m0@acme.test>")),
        kind=kind,
        mail_from="bob@client.test",
        rcpt_to=["ann@acme.test"],
        raw_key=f"inbound/{inbound_id}.eml",
        auto_reply=None,
        thread=kind == "message",
        now=1234.5,
    )


async def test_hooks_run_in_order_on_the_stored_row(db: Database) -> None:
    (ann,) = await make_users(db, "ann")
    seen: list[tuple[str, str, str, float]] = []

    async def first(row: InboundRow) -> None:
        seen.append(("first", row.id, row.kind, row.received_at))

    async def second(row: InboundRow) -> None:
        stored = await InboundStore(db.engine).get(row.user_id, row.id)
        assert stored is not None  # committed before any hook runs
        seen.append(("second", row.id, row.kind, row.received_at))

    store = InboundStore(db.engine, (first, second))
    row = await _add(store, ann, "inb_hook1", "message")
    await _add(store, ann, "inb_hook2", "dsn")
    assert row.in_reply_to == ["m0@acme.test"]  # as parsed (stored without brackets)
    assert seen == [
        ("first", "inb_hook1", "message", 1234.5),
        ("second", "inb_hook1", "message", 1234.5),
        ("first", "inb_hook2", "dsn", 1234.5),
        ("second", "inb_hook2", "dsn", 1234.5),
    ]


async def test_a_failing_hook_reaches_the_caller_after_the_store(db: Database) -> None:
    (ann,) = await make_users(db, "ann")

    async def broken(row: InboundRow) -> None:
        raise RuntimeError(f"hook failed on {row.id}")

    with pytest.raises(RuntimeError, match="inb_hook3"):
        await _add(InboundStore(db.engine, (broken,)), ann, "inb_hook3", "message")
    assert await InboundStore(db.engine).get(ann, "inb_hook3") is not None


async def test_campaign_stops_plug_in_beside_existing_hooks(db: Database, tmp_path: Path) -> None:
    async def earlier(row: InboundRow) -> None:
        del row

    settings = load_settings(env_file=None, mail_storage_dir=tmp_path)
    built = InboundMail.build(settings, db.engine)
    assert built.store.after_add == ()  # inbound mail alone knows nothing of campaigns
    base = InboundMail(
        store=InboundStore(db.engine, (earlier,)),
        raw=built.raw,
        routing=built.routing,
        outbound=built.outbound,
        suppression=built.suppression,
        config=built.config,
    )
    wired = with_campaign_stops(base)
    first, stops = wired.store.after_add
    assert first is earlier
    assert getattr(stops, "func", None) is on_reply
    assert isinstance(wired.suppression, CampaignBounceSink)
    assert wired.suppression.inner is built.suppression
