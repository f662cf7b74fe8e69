"""JobQueue on SQLite and PostgreSQL: enqueue, owner scoping, listing, cancel, bounds, leases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from jobs_support import Clock, clock_fixture, db_fixture, db_url_fixture, queue_fixture  # noqa: F401 (fixtures)

from server.jobs import (
    JobContext,
    JobFinished,
    JobInputError,
    JobItem,
    JobNotFound,
    JobQueue,
    JobState,
    Limits,
    UnknownKind,
    Worker,
)
from server.jobs.errors import JobBusy
from server.jobs.rules import ItemEvent, ItemState, JobEvent


async def test_enqueue_then_get_list_and_other_owners_see_nothing(queue: JobQueue) -> None:
    job = await queue.enqueue("alice", "echo", {"q": "x"})
    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert (await queue.get("alice", job.id)) == job
    assert await queue.get("bob", job.id) is None
    assert await queue.get("alice", "job_" + "0" * 27) is None
    assert await queue.get("alice", "not-an-id") is None
    assert (await queue.list("bob")).data == []
    with pytest.raises(JobNotFound):
        await queue.cancel("bob", job.id)
    with pytest.raises(JobNotFound):
        await queue.items("bob", job.id)
    assert job.as_json()["status"] == "queued"


async def test_list_pages_newest_first_with_a_cursor(queue: JobQueue, clock: Clock) -> None:
    ids = []
    for i in range(7):
        clock.advance(0.01)
        ids.append((await queue.enqueue("alice", "echo" if i % 2 else "rows", {}, [])).id)
    await queue.enqueue("bob", "echo", {})
    seen: list[str] = []
    cursor = None
    while True:
        page = await queue.list("alice", cursor, limit=3)
        seen += [job.id for job in page.data]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    echoes = await queue.list("alice", kind="echo", limit=100)
    assert [j.id for j in echoes.data] == ids[1::2][::-1]
    assert not echoes.has_more
    with pytest.raises(JobInputError):
        await queue.list("alice", limit=0)
    with pytest.raises(JobInputError):
        await queue.list("alice", cursor="'; drop table jobs")


async def test_unknown_kind_and_bad_owner_are_refused(queue: JobQueue) -> None:
    with pytest.raises(UnknownKind):
        await queue.enqueue("alice", "nope", {})
    with pytest.raises(JobInputError) as info:
        await queue.enqueue("", "echo", {})
    assert info.value.param == "owner_id"
    with pytest.raises(JobInputError):
        await queue.enqueue("alice", "Bad Kind", {})
    with pytest.raises(JobInputError):
        await queue.enqueue("alice", "rows", {})  # an item kind needs items


async def test_payload_and_items_are_bounded(db: Any, clock: Clock) -> None:
    q = JobQueue(db, clock=clock, limits=Limits(payload_bytes=100, item_bytes=50, items=3))

    async def nothing(ctx: JobContext) -> None:
        return None

    q.register("echo", nothing)
    with pytest.raises(JobInputError) as info:
        await q.enqueue("alice", "echo", {"x": "y" * 200})
    assert info.value.too_large
    assert info.value.param == "payload"
    with pytest.raises(JobInputError) as info:
        await q.enqueue("alice", "echo", {}, ["a", "b", "c", "d"])
    assert info.value.too_large
    assert info.value.param == "items"
    with pytest.raises(JobInputError) as info:
        await q.enqueue("alice", "echo", {}, ["ok", "z" * 60])
    assert info.value.param == "items[1]"
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(JobInputError, match="nested"):
        await q.enqueue("alice", "echo", deep)
    with pytest.raises(JobInputError, match="not JSON"):
        await q.enqueue("alice", "echo", {"x": float("nan")})
    with pytest.raises(JobInputError, match="not JSON"):
        await q.enqueue("alice", "echo", {"x": object()})
    with pytest.raises(JobInputError, match="must be a list"):
        await q.enqueue("alice", "echo", {}, "abc")
    assert (await q.list("alice")).data == []  # nothing was stored


async def test_an_exclusive_key_is_held_by_one_unfinished_job(queue: JobQueue) -> None:
    key = "dataset:ds_1"
    first = await queue.enqueue("alice", "echo", {}, exclusive_key=key)
    with pytest.raises(JobBusy) as busy:
        await queue.enqueue("alice", "echo", {}, exclusive_key=key)
    assert busy.value.key == key
    other = await queue.enqueue("alice", "echo", {}, exclusive_key="dataset:ds_2")
    plain = [await queue.enqueue("alice", "echo", {}) for _ in range(2)]  # no key: no limit
    assert len({first.id, other.id, *(job.id for job in plain)}) == 4
    await queue.cancel("alice", first.id)  # finished: the key is free again
    again = await queue.enqueue("alice", "echo", {}, exclusive_key=key)
    assert again.id != first.id


async def test_racing_enqueues_with_one_exclusive_key_store_one_job(queue: JobQueue) -> None:
    async def attempt() -> str | None:
        try:
            return (await queue.enqueue("alice", "echo", {}, exclusive_key="race")).id
        except JobBusy:
            return None

    ids = await asyncio.gather(*(attempt() for _ in range(8)))
    assert len([job_id for job_id in ids if job_id is not None]) == 1
    assert len((await queue.list("alice")).data) == 1


async def test_cancel_a_queued_job_ends_it_and_a_finished_one_conflicts(queue: JobQueue) -> None:
    job = await queue.enqueue("alice", "echo", {})
    cancelled = await queue.cancel("alice", job.id)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at is not None
    with pytest.raises(JobFinished):
        await queue.cancel("alice", job.id)
    worker = Worker(queue, lease_seconds=30)
    assert not await worker.run_once()  # nothing left to claim


async def test_cancel_a_running_job_is_requested_then_acknowledged(
    queue: JobQueue, clock: Clock
) -> None:
    job = await queue.enqueue("alice", "echo", {})
    claimed = await queue.store.claim("w1", clock(), 30, queue.kinds)
    assert claimed is not None
    assert claimed.state is JobState.RUNNING
    once = await queue.cancel("alice", job.id)
    again = await queue.cancel("alice", job.id)
    assert once.state is again.state is JobState.CANCEL_REQUESTED
    assert once.as_json()["status"] == "running"
    assert once.as_json()["cancel_requested"]
    assert await queue.store.heartbeat(job.id, "w1", clock(), 30) is JobState.CANCEL_REQUESTED
    done = await queue.store.finish(job.id, "w1", JobEvent.ACKNOWLEDGE_CANCEL, clock())
    assert done is not None
    assert done.state is JobState.CANCELLED


async def test_one_claim_wins_and_an_expired_lease_moves_to_the_next_worker(
    queue: JobQueue, clock: Clock
) -> None:
    job = await queue.enqueue("alice", "echo", {})
    claims = await asyncio.gather(
        *(queue.store.claim(f"w{i}", clock(), 10, queue.kinds) for i in range(6))
    )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert winners[0].attempts == 1
    first = "w" + str(claims.index(winners[0]))
    assert await queue.store.claim("late", clock(), 10, queue.kinds) is None
    clock.advance(11)  # the first worker died: its lease expires
    second = await queue.store.claim("w-next", clock(), 10, queue.kinds)
    assert second is not None
    assert second.id == job.id
    assert second.attempts == 2
    # the first worker is back from the dead: nothing it writes counts any more
    assert await queue.store.heartbeat(job.id, first, clock(), 10) is None
    assert await queue.store.finish(job.id, first, JobEvent.SUCCEED, clock()) is None
    finished = await queue.store.finish(job.id, "w-next", JobEvent.SUCCEED, clock(), result=1)
    assert finished is not None
    assert finished.state is JobState.SUCCEEDED
    assert finished.result == 1


async def test_an_item_completes_once_and_counts_once(queue: JobQueue, clock: Clock) -> None:
    job = await queue.enqueue("alice", "rows", {}, [{"n": 1}, {"n": 2}])
    assert await queue.store.claim("w1", clock(), 10, queue.kinds) is not None
    store = queue.store
    assert await store.item_event(job.id, 0, "w1", ItemEvent.START, clock()) is not None
    results = await asyncio.gather(
        *(
            store.item_event(job.id, 0, "w1", ItemEvent.COMPLETE, clock(), result=i)
            for i in range(5)
        )
    )
    applied = [r for r in results if r is not None]
    assert len(applied) == 1
    assert applied[0][0] is ItemState.DONE
    assert await store.item_event(job.id, 0, "w1", ItemEvent.FAIL, clock()) is None
    assert await store.item_event(job.id, 1, "intruder", ItemEvent.COMPLETE, clock()) is None
    current = await queue.get("alice", job.id)
    assert current is not None
    assert current.counts.done == 1
    assert current.counts.total == 2
    rows = await queue.items("alice", job.id)
    assert [r.state for r in rows] == [ItemState.DONE, ItemState.PENDING]
    assert rows[0].attempts == 1
    assert rows[0].as_json()["status"] == "done"


async def test_worker_runs_an_item_job_and_a_plain_job(queue: JobQueue) -> None:
    rows = await queue.enqueue("alice", "rows", {}, [f"r{i}" for i in range(25)])
    plain = await queue.enqueue("alice", "echo", {"a": 1})
    worker = Worker(queue)
    assert await worker.run_once()
    assert await worker.run_once()
    assert not await worker.run_once()
    done_rows = await queue.get("alice", rows.id)
    assert done_rows is not None
    assert done_rows.state is JobState.SUCCEEDED
    assert done_rows.result == {"total": 25, "done": 25, "failed": 0, "skipped": 0}
    items = await queue.items("alice", rows.id, limit=1000)
    assert [i.result for i in items] == [{"seen": f"r{i}"} for i in range(25)]
    done_plain = await queue.get("alice", plain.id)
    assert done_plain is not None
    assert done_plain.result == {"echo": {"a": 1}}
    assert done_plain.as_json()["result"] == {"echo": {"a": 1}}
    with pytest.raises(JobFinished):
        await queue.cancel("alice", plain.id)


async def test_register_refuses_duplicates_and_empty_kinds(queue: JobQueue) -> None:
    async def h(ctx: JobContext) -> None:
        return None

    async def ih(ctx: JobContext, item: JobItem) -> None:
        return None

    with pytest.raises(ValueError, match="already"):
        queue.register("echo", h)
    with pytest.raises(ValueError, match="handler"):
        queue.register("empty")
    with pytest.raises(ValueError, match=">= 1"):
        queue.register("fast", item_handler=ih, item_concurrency=0)
    with pytest.raises(JobInputError):
        queue.register("No", h)
