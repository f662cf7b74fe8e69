"""The dataset store on SQLite and PostgreSQL: create, append in batches, read, annotate,
ownership, delete with its rows."""

from __future__ import annotations

import pytest

from server.auth.store import AccountStore
from server.datasets.store import APPEND_BATCH, DatasetStore, NewRow
from server.db.engine import Database


async def _users(db: Database) -> tuple[str, str]:
    accounts = AccountStore(db.engine, b"k" * 32)
    first, _ = await accounts.user_for_subject("ann", email="ann@x.test", plan="paid")
    second, _ = await accounts.user_for_subject("bob", email="bob@x.test", plan="paid")
    return first.id, second.id


async def test_append_read_and_ownership(db: Database) -> None:
    ann, bob = await _users(db)
    store = DatasetStore(db.engine)
    made = await store.create(
        ann,
        name="Leads",
        source_type="upload_csv",
        pipeline_type="enrichment",
        columns=["Email", "Name"],
        mapping={"email": "Email"},
    )
    total = APPEND_BATCH * 2 + 7
    rows = (
        NewRow(line=i + 2, data={"Email": f"p{i}@x.test", "Name": f"P {i}"}) for i in range(total)
    )
    assert await store.append(made.id, rows, rejected=3) == total
    again = await store.get(ann, made.id)
    assert again is not None
    assert (again.row_count, again.rejected_count, again.columns) == (total, 3, ("Email", "Name"))
    assert await store.get(bob, made.id) is None
    page = await store.rows(made.id, offset=APPEND_BATCH, limit=2)
    assert [(r.idx, r.line, r.data["Email"]) for r in page] == [
        (APPEND_BATCH, APPEND_BATCH + 2, f"p{APPEND_BATCH}@x.test"),
        (APPEND_BATCH + 1, APPEND_BATCH + 3, f"p{APPEND_BATCH + 1}@x.test"),
    ]
    seen = [row.idx async for row in store.iter_rows(made.id, batch=500)]
    assert seen == list(range(total))
    # A second append continues the numbering.
    assert await store.append(made.id, [NewRow(line=None, data={"Email": "z@x.test"})]) == 1
    last = await store.rows(made.id, offset=total, limit=5)
    assert [(r.idx, r.line) for r in last] == [(total, None)]


async def test_annotate_merges_and_records_columns(db: Database) -> None:
    ann, _ = await _users(db)
    store = DatasetStore(db.engine)
    made = await store.create(
        ann, name="L", source_type="api", pipeline_type="verification", columns=["email"]
    )
    await store.append(made.id, [NewRow(line=i, data={"email": f"{i}@x.test"}) for i in range(3)])
    await store.annotate(made.id, {0: {"risk": "low"}, 2: {"risk": "high", "mx": "mx.x.test"}})
    await store.annotate(made.id, {0: {"found_email": "a@x.test"}, 99: {"risk": "gone"}})
    rows = await store.rows(made.id)
    assert [r.added for r in rows] == [
        {"risk": "low", "found_email": "a@x.test"},
        {},
        {"risk": "high", "mx": "mx.x.test"},
    ]
    record = await store.get(ann, made.id)
    assert record is not None
    assert record.added_columns == ("risk", "mx", "found_email")


async def test_delete_is_owner_only_and_cascades(db: Database) -> None:
    ann, bob = await _users(db)
    store = DatasetStore(db.engine)
    made = await store.create(
        ann, name="L", source_type="api", pipeline_type="enrichment", columns=["email"]
    )
    await store.append(made.id, [NewRow(line=1, data={"email": "a@x.test"})])
    assert await store.delete(bob, made.id) is False
    assert len(await store.rows(made.id)) == 1
    assert await store.delete(ann, made.id) is True
    assert await store.get(ann, made.id) is None
    assert await store.rows(made.id) == []


async def test_append_to_missing_dataset_raises(db: Database) -> None:
    store = DatasetStore(db.engine)
    with pytest.raises(LookupError):
        await store.append("ds_01JF0000000000000000000000", [NewRow(line=1, data={})])
