"""Row leases on both backends: several workers work one bulk job's rows at once, each row is
completed once, a killed worker's rows are taken again, and the job is finished and hooked once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from jobs_support import (  # noqa: F401 (fixtures)
    Clock,
    clock_fixture,
    db_fixture,
    db_url_fixture,
    queue_fixture,
)

from server.db.engine import Database
from server.jobs import Job, JobContext, JobItem, JobQueue, JobState, Worker
from server.jobs.rules import ItemEvent, ItemState

ROWS = 200


def _shared_queue(
    db: Database, clock: Clock, seen: list[tuple[str, int]], both: asyncio.Event, hooks: list[str]
) -> JobQueue:
    """One process's queue: its ``share`` rows wait until two workers have run rows."""
    queue = JobQueue(db, clock=clock)

    async def row(ctx: JobContext, item: JobItem) -> Any:
        seen.append((ctx.worker_id, item.index))
        if len({worker for worker, _ in seen}) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 60)  # a guard against hanging only
        return {"by": ctx.worker_id}

    async def hook(job: Job) -> None:
        hooks.append(f"{job.id}:{job.state.value}")

    queue.register("share", item_handler=row, item_concurrency=4)
    queue.on_terminal(hook)
    return queue


async def test_two_workers_share_one_bulk_job_and_complete_each_row_once(
    db: Database, clock: Clock
) -> None:
    seen: list[tuple[str, int]] = []
    hooks: list[str] = []
    both = asyncio.Event()
    first = _shared_queue(db, clock, seen, both, hooks)
    second = _shared_queue(db, clock, seen, both, hooks)
    job = await first.enqueue("alice", "share", {}, list(range(ROWS)))
    a = Worker(first, worker_id="a", concurrency=1, poll_seconds=0.05)
    b = Worker(second, worker_id="b", concurrency=1, poll_seconds=0.05)
    assert await a.queue.store.claim("a", clock(), 30, ["share"]) is not None
    # "a" holds the job; "b" finds it through join() and helps with its rows
    joined = await b.queue.store.join("b", clock(), ["share"])
    assert joined is not None
    assert joined.id == job.id
    await a.queue.store.release(job.id, "a", clock())
    await asyncio.gather(a.run_once(), b.run_once())
    final = await first.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED
    assert final.counts.as_json() == {"total": ROWS, "done": ROWS, "failed": 0, "skipped": 0}
    runs = Counter(index for _, index in seen)
    assert set(runs) == set(range(ROWS))
    assert max(runs.values()) == 1
    rows = await first.items("alice", job.id, limit=1000)
    assert all(r.state is ItemState.DONE and r.attempts == 1 for r in rows)
    assert {r.result["by"] for r in rows} == {"a", "b"}  # both workers completed rows
    assert hooks == [f"{job.id}:succeeded"]  # finished and hooked once


async def test_a_killed_workers_rows_are_taken_again_once_their_lease_ends(
    queue: JobQueue, clock: Clock
) -> None:
    store = queue.store
    job = await queue.enqueue("alice", "rows", {}, list(range(10)))
    assert await store.claim("a", clock(), 5, ["rows"]) is not None
    mine = await store.claim_items(job.id, "a", clock(), 5, 4)
    assert [r.index for r in mine] == [0, 1, 2, 3]
    assert all(r.state is ItemState.RUNNING and r.attempts == 1 for r in mine)
    helped = await store.join("b", clock(), ["rows"])
    assert helped is not None
    assert helped.id == job.id
    theirs = await store.claim_items(job.id, "b", clock(), 5, 100)
    assert [r.index for r in theirs] == list(range(4, 10))  # never a row "a" holds
    assert await store.claim_items(job.id, "b", clock(), 5, 100) == []
    assert await store.join("c", clock(), ["rows"]) is None  # nothing left to claim
    # "b" cannot complete a row "a" holds
    assert await store.item_event(job.id, 0, "b", ItemEvent.COMPLETE, clock()) is None
    for index in range(4, 10):
        assert await store.item_event(job.id, index, "b", ItemEvent.COMPLETE, clock(), result=index)
    clock.advance(2)
    assert await store.extend_items(job.id, "b", clock(), 5) is JobState.RUNNING
    clock.advance(4)  # "a" was killed: its job lease and its row leases ran out
    taken = await store.claim_items(job.id, "b", clock(), 5, 100)
    assert [(r.index, r.attempts) for r in taken] == [(0, 2), (1, 2), (2, 2), (3, 2)]
    # the killed worker's late write lands nowhere; the row is completed once
    assert await store.item_event(job.id, 0, "a", ItemEvent.COMPLETE, clock(), result="a") is None
    for index in range(4):
        assert await store.item_event(job.id, index, "b", ItemEvent.COMPLETE, clock(), result=index)
    assert await store.item_event(job.id, 0, "b", ItemEvent.COMPLETE, clock()) is None
    # a worker takes the job's expired lease over and finishes it
    assert await Worker(queue, worker_id="c").run_once()
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED
    assert final.counts.as_json() == {"total": 10, "done": 10, "failed": 0, "skipped": 0}
    rows = await queue.items("alice", job.id, limit=100)
    assert [r.result for r in rows] == list(range(10))


async def test_no_row_is_claimed_once_a_cancel_is_asked_or_the_job_ended(
    queue: JobQueue, clock: Clock
) -> None:
    store = queue.store
    job = await queue.enqueue("alice", "rows", {}, list(range(3)))
    assert await store.claim_items(job.id, "a", clock(), 5, 10) == []  # still queued
    assert await store.join("a", clock(), ["rows"]) is None  # queued jobs are claimed, not joined
    assert await store.claim("a", clock(), 5, ["rows"]) is not None
    assert await store.join("b", clock(), ["echo"]) is None  # another kind
    assert await store.join("b", clock(), []) is None
    assert await store.claim_items(job.id, "a", clock(), 5, 0) == []
    await queue.cancel("alice", job.id)
    assert await store.claim_items(job.id, "a", clock(), 5, 10) == []
    assert await store.join("b", clock(), ["rows"]) is None
    assert await store.extend_items(job.id, "a", clock(), 5) is JobState.CANCEL_REQUESTED
    assert await Worker(queue, worker_id="c", lease_seconds=5).run_once() is False  # leased
    clock.advance(6)
    assert await Worker(queue, worker_id="c").run_once()
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.CANCELLED
    assert await store.extend_items(job.id, "a", clock(), 5) is None  # ended
    assert await store.claim_items(job.id, "a", clock(), 5, 10) == []
