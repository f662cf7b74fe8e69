"""Managing datasets in the store on SQLite and PostgreSQL: filtered lists, rename, archive and
restore, download counts, and prune with re-indexing (the (dataset_id, idx) key holds
throughout on PostgreSQL, whose unique checks are immediate)."""

from __future__ import annotations

from typing import Any

import pytest

from server.auth.store import AccountStore
from server.datasets.rules import above
from server.datasets.store import APPEND_BATCH, DatasetStore, NewRow
from server.db.engine import Database


async def _user(db: Database, name: str = "ann") -> str:
    accounts = AccountStore(db.engine, b"k" * 32)
    user, _ = await accounts.user_for_subject(name, email=f"{name}@x.test", plan="paid")
    return user.id


async def _dataset(store: DatasetStore, user: str, name: str, pipeline: str = "enrichment") -> str:
    made = await store.create(
        user, name=name, source_type="upload_csv", pipeline_type=pipeline, columns=["Email"]
    )
    return made.id


async def test_list_filters_order_and_archive(db: Database) -> None:
    ann, bob = await _user(db), await _user(db, "bob")
    store = DatasetStore(db.engine)
    ids = [await _dataset(store, ann, name) for name in ("Alpha", "beta_1", "Gamma 100%")]
    other = await _dataset(store, ann, "alpha prime", "campaign")
    await _dataset(store, bob, "Alpha of bob")
    listed = await store.list_datasets(ann, limit=10)
    assert [r.id for r in listed] == [other, *reversed(ids)]
    assert [r.name for r in await store.list_datasets(ann, limit=10, search="alpha")] == [
        "alpha prime",
        "Alpha",
    ]
    assert [r.name for r in await store.list_datasets(ann, limit=10, search="_")] == ["beta_1"]
    assert [r.name for r in await store.list_datasets(ann, limit=10, search="%")] == ["Gamma 100%"]
    assert [r.id for r in await store.list_datasets(ann, limit=10, pipeline_type="campaign")] == [
        other
    ]
    assert [r.id for r in await store.list_datasets(ann, limit=2, after=other)] == [
        ids[2],
        ids[1],
    ]
    assert [r.id for r in await store.list_datasets(ann, limit=1, offset=3)] == [ids[0]]
    first = await store.archive(ann, ids[0])
    assert first is not None
    assert first.archived_at is not None
    again = await store.archive(ann, ids[0])
    assert again is not None
    assert again.archived_at == first.archived_at
    assert ids[0] not in [r.id for r in await store.list_datasets(ann, limit=10)]
    assert [r.id for r in await store.list_datasets(ann, limit=10, archived=True)] == [ids[0]]
    assert len(await store.list_datasets(ann, limit=10, archived=None)) == 4
    assert await store.archive(bob, ids[0]) is None
    restored = await store.restore(ann, ids[0])
    assert restored is not None
    assert not restored.archived
    assert (await store.restore(ann, ids[0])) is not None
    assert await store.restore(bob, ids[0]) is None


async def test_rename_and_downloads(db: Database) -> None:
    ann, bob = await _user(db), await _user(db, "bob")
    store = DatasetStore(db.engine)
    made = await _dataset(store, ann, "Old")
    renamed = await store.rename(ann, made, "New name")
    assert renamed is not None
    assert renamed.name == "New name"
    assert await store.rename(bob, made, "Stolen") is None
    with pytest.raises(ValueError, match="dataset name"):
        await store.rename(ann, made, "x" * 201)
    await store.record_download(ann, made)
    await store.record_download(ann, made)
    await store.record_download(bob, made)
    record = await store.get(ann, made)
    assert record is not None
    assert record.download_count == 2
    assert record.last_downloaded_at is not None


def _risk(i: int) -> dict[str, Any]:
    if i % 4 == 3:
        return {}  # never verified
    return {"risk": ("low", "medium", "high")[i % 4], "risk_score": (10, 50, 90)[i % 4]}


async def test_prune_deletes_above_the_threshold_and_reindexes(db: Database) -> None:
    ann = await _user(db)
    store = DatasetStore(db.engine)
    made = await _dataset(store, ann, "Leads")
    total = APPEND_BATCH + 203  # more than one page of the scan
    await store.append(made, (NewRow(i + 2, {"Email": f"p{i}@x.test"}) for i in range(total)))
    await store.annotate(made, {i: _risk(i) for i in range(total) if _risk(i)})
    high = sum(1 for i in range(total) if i % 4 == 2)
    never = sum(1 for i in range(total) if i % 4 == 3)

    dry = await store.prune(made, lambda a: above(a, "medium"), dry_run=True)
    assert (dry.deleted, dry.kept, dry.unverified) == (high, total - high, never)
    assert len([r async for r in store.iter_rows(made)]) == total

    done = await store.prune(made, lambda a: above(a, "medium"))
    assert done == dry
    rows = [r async for r in store.iter_rows(made)]
    assert [r.idx for r in rows] == list(range(total - high))
    survivors = [i for i in range(total) if i % 4 != 2]
    assert [r.data["Email"] for r in rows] == [f"p{i}@x.test" for i in survivors]
    assert [r.line for r in rows] == [i + 2 for i in survivors]
    record = await store.get(ann, made)
    assert record is not None
    assert record.row_count == total - high

    by_score = await store.prune(made, lambda a: above(a, 20))
    assert by_score.deleted == sum(1 for i in survivors if i % 4 == 1)
    rows = [r async for r in store.iter_rows(made)]
    assert [r.idx for r in rows] == list(range(len(rows)))
    assert all(r.added.get("risk") in (None, "low") for r in rows)
    nothing = await store.prune(made, lambda a: above(a, "high"))
    assert (nothing.deleted, nothing.row_count) == (0, len(rows))
    appended = await store.append(made, [NewRow(None, {"Email": "late@x.test"})])
    assert appended == 1
    assert [r.idx for r in await store.rows(made, offset=len(rows), limit=5)] == [len(rows)]
