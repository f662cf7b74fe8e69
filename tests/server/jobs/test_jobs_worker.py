"""The worker in process, on both backends: outcomes, error paths, cancel, leases, the hook."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from jobs_support import (  # noqa: F401 (fixtures)
    Clock,
    clock_fixture,
    db_fixture,
    db_url_fixture,
    eventually,
    queue_fixture,
    state_of,
)

from server.db.engine import Database
from server.jobs import (
    Job,
    JobCancelled,
    JobContext,
    JobError,
    JobItem,
    JobQueue,
    JobState,
    Limits,
    SkipItem,
    Worker,
)
from server.jobs.rules import GENERIC_CODE, GENERIC_MESSAGE, ItemEvent, ItemState

SECRET = "postgresql://admin:hunter2@db.internal/prod"


def _hooked(queue: JobQueue) -> list[str]:
    calls: list[str] = []

    async def hook(job: Job) -> None:
        assert job.terminal
        calls.append(f"{job.id}:{job.state.value}")

    queue.on_terminal(hook)
    return calls


async def test_a_crashing_handler_fails_the_job_without_leaking_its_error(
    queue: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(ctx: JobContext) -> None:
        raise RuntimeError(f"cannot connect to {SECRET}\nTraceback (most recent call last)")

    queue.register("boom", boom)
    calls = _hooked(queue)
    job = await queue.enqueue("alice", "boom", {})
    with caplog.at_level(logging.ERROR, logger="server.jobs"):
        assert await Worker(queue).run_once()
    failed = await queue.get("alice", job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert (failed.error_code, failed.error_message) == (GENERIC_CODE, GENERIC_MESSAGE)
    body = str(failed.as_json())
    assert "hunter2" not in body
    assert "Traceback" not in body
    assert failed.as_json()["error"] == {"code": GENERIC_CODE, "message": GENERIC_MESSAGE}
    assert failed.as_json()["result"] is None
    assert "RuntimeError" in caplog.text  # the operator still sees what happened
    assert calls == [f"{job.id}:failed"]


async def test_a_job_error_is_public_and_cleaned(queue: JobQueue) -> None:
    async def refuse(ctx: JobContext) -> None:
        raise JobError("domain_unresolved", "no MX\nfor acme.test " + "x" * 900)

    async def bad_code(ctx: JobContext) -> None:
        raise JobError("Not A Code!", "")

    queue.register("refuse", refuse)
    queue.register("bad_code", bad_code)
    first = await queue.enqueue("alice", "refuse", {})
    second = await queue.enqueue("alice", "bad_code", {})
    worker = Worker(queue)
    assert await worker.run_once()
    assert await worker.run_once()
    one = await queue.get("alice", first.id)
    two = await queue.get("alice", second.id)
    assert one is not None
    assert one.error_code == "domain_unresolved"
    assert one.error_message is not None
    assert one.error_message.startswith("no MX for acme.test")
    assert len(one.error_message) == 500
    assert "\n" not in one.error_message
    assert two is not None
    assert (two.error_code, two.error_message) == (GENERIC_CODE, GENERIC_MESSAGE)


async def test_items_end_done_failed_or_skipped_and_the_job_counts_them(
    queue: JobQueue,
) -> None:
    async def row(ctx: JobContext, item: JobItem) -> Any:
        kind = item.input["do"]
        if kind == "skip":
            raise SkipItem("no_name")
        if kind == "refuse":
            raise JobError("catch_all", "the domain accepts everything")
        if kind == "crash":
            raise ValueError(SECRET)
        if kind == "huge":
            return "x" * 20_000
        return {"ok": item.index}

    async def summary(ctx: JobContext) -> Any:
        return {"summary": ctx.job.counts.as_json()}

    queue.register("mixed", summary, item_handler=row, item_concurrency=3)
    plan = ["ok", "skip", "refuse", "crash", "ok", "huge", "skip", "ok"]
    job = await queue.enqueue("alice", "mixed", {}, [{"do": p} for p in plan])
    assert await Worker(queue).run_once()
    done = await queue.get("alice", job.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    counts = {"total": 8, "done": 3, "failed": 3, "skipped": 2}
    assert done.result == {"summary": counts}
    assert done.counts.as_json() == counts
    rows = await queue.items("alice", job.id)
    by_index = {r.index: r for r in rows}
    assert by_index[0].result == {"ok": 0}
    assert by_index[0].state is ItemState.DONE
    assert by_index[1].state is ItemState.SKIPPED
    assert by_index[1].error_code == "no_name"
    assert by_index[2].error_code == "catch_all"
    assert by_index[2].result == {
        "error": {"code": "catch_all", "message": "the domain accepts everything"}
    }
    assert by_index[3].error_code == GENERIC_CODE
    assert "hunter2" not in str(by_index[3].result)
    assert by_index[5].error_code == "result_too_large"
    assert await queue.items("alice", job.id, after=6) == [by_index[7]]


async def test_a_result_over_the_limit_fails_the_job(db: Database, clock: Clock) -> None:
    q = JobQueue(db, clock=clock, limits=Limits(result_bytes=100))

    async def big(ctx: JobContext) -> Any:
        return ["x" * 200]

    async def odd(ctx: JobContext) -> Any:
        return {1, 2}

    q.register("big", big)
    q.register("odd", odd)
    one = await q.enqueue("alice", "big", {})
    two = await q.enqueue("alice", "odd", {})
    worker = Worker(q)
    assert await worker.run_once()
    assert await worker.run_once()
    first, second = await q.get("alice", one.id), await q.get("alice", two.id)
    assert first is not None
    assert first.error_code == "result_too_large"
    assert second is not None
    assert second.error_code == GENERIC_CODE


async def test_cancel_stops_a_running_item_job(db: Database) -> None:
    queue = JobQueue(db)
    calls = _hooked(queue)
    started = asyncio.Event()
    gate = asyncio.Event()

    async def slow(ctx: JobContext, item: JobItem) -> Any:
        if item.index >= 2:
            started.set()
            await gate.wait()
        return item.index

    queue.register("slow", item_handler=slow, item_concurrency=1)
    job = await queue.enqueue("alice", "slow", {}, list(range(20)))
    async with Worker(queue, lease_seconds=0.3, poll_seconds=0.05):
        await started.wait()
        requested = await queue.cancel("alice", job.id)
        assert requested.state is JobState.CANCEL_REQUESTED
        gate.set()
        await eventually(lambda: _is(queue, job.id, JobState.CANCELLED), "the job is cancelled")
    final = await queue.get("alice", job.id)
    assert final is not None
    assert 2 <= final.counts.done < 20
    assert final.as_json()["result"] is None
    assert final.as_json()["error"] is None
    assert calls == [f"{job.id}:cancelled"]


async def test_a_handler_that_sees_the_cancel_stops(db: Database) -> None:
    queue = JobQueue(db)
    running = asyncio.Event()

    async def loop(ctx: JobContext) -> Any:
        running.set()
        while not ctx.is_cancelled():
            await ctx.progress(1, total=10)
            await asyncio.sleep(0.01)
        raise JobCancelled

    async def quitter(ctx: JobContext) -> Any:
        raise JobCancelled  # nobody asked: that is a failure

    queue.register("loop", loop)
    queue.register("quitter", quitter)
    job = await queue.enqueue("alice", "loop", {})
    other = await queue.enqueue("alice", "quitter", {})
    async with Worker(queue, lease_seconds=0.3, poll_seconds=0.05):
        await running.wait()
        await queue.cancel("alice", job.id)
        await eventually(lambda: _is(queue, job.id, JobState.CANCELLED), "cancelled")
        await eventually(lambda: _is(queue, other.id, JobState.FAILED), "failed")
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.counts.as_json()["done"] == 1
    failed = await queue.get("alice", other.id)
    assert failed is not None
    assert failed.error_code == "cancelled"


async def test_progress_refuses_impossible_counts(queue: JobQueue) -> None:
    errors: list[str] = []

    async def liar(ctx: JobContext) -> Any:
        try:
            await ctx.progress(5, total=3)
        except ValueError as exc:
            errors.append(str(exc))
        return None

    queue.register("liar", liar)
    await queue.enqueue("alice", "liar", {})
    assert await Worker(queue).run_once()
    assert errors
    assert "at most total" in errors[0]


async def test_a_worker_that_lost_its_lease_stops_and_writes_nothing(
    queue: JobQueue, clock: Clock
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    runs: list[str] = []

    async def hold(ctx: JobContext) -> Any:
        runs.append(ctx.worker_id)
        entered.set()
        await release.wait()
        return ctx.worker_id

    queue.register("hold", hold)
    job = await queue.enqueue("alice", "hold", {})
    first = Worker(queue, lease_seconds=0.3, worker_id="first")
    task = asyncio.create_task(first.run_once())
    await entered.wait()
    clock.advance(60)  # the first worker stalls past its lease; a second takes over
    second = await queue.store.claim("second", clock(), 0.3, queue.kinds)
    assert second is not None
    assert second.attempts == 2
    assert await task is True  # the first one's heartbeat found the lease gone and stopped
    assert await state_of(queue, "alice", job.id) is JobState.RUNNING
    assert runs == ["first"]


async def test_graceful_stop_gives_a_running_job_back(queue: JobQueue, clock: Clock) -> None:
    entered = asyncio.Event()

    async def forever(ctx: JobContext) -> Any:
        entered.set()
        await asyncio.Event().wait()

    queue.register("forever", forever)
    job = await queue.enqueue("alice", "forever", {})
    worker = Worker(queue, concurrency=2, grace_seconds=0.05, poll_seconds=0.05)
    run = asyncio.create_task(worker.run())
    await entered.wait()
    worker.stop()
    await run
    again = await queue.store.claim("next", clock(), 30, queue.kinds)  # no lease to wait for
    assert again is not None
    assert again.id == job.id
    assert again.attempts == 1


async def test_a_job_that_keeps_killing_workers_fails(queue: JobQueue, clock: Clock) -> None:
    ran: list[int] = []

    async def poison(ctx: JobContext) -> Any:
        ran.append(ctx.job.attempts)
        return None

    queue.register("poison", poison, max_attempts=2)
    calls = _hooked(queue)
    job = await queue.enqueue("alice", "poison", {})
    for worker in ("a", "b"):  # two workers claim it and die
        assert await queue.store.claim(worker, clock(), 5, queue.kinds) is not None
        clock.advance(6)
    assert await Worker(queue).run_once()
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.FAILED
    assert ran == []
    assert final.error_code == "attempts_exhausted"
    assert final.attempts == 3
    assert calls == [f"{job.id}:failed"]


async def test_an_item_that_keeps_killing_workers_fails_alone(
    queue: JobQueue, clock: Clock
) -> None:
    seen: list[int] = []

    async def row(ctx: JobContext, item: JobItem) -> Any:
        seen.append(item.index)
        return item.index

    queue.register("fragile", item_handler=row, max_item_attempts=2, max_attempts=9)
    job = await queue.enqueue("alice", "fragile", {}, ["a", "b"])
    for worker in ("a", "b"):  # each dies while row 0 runs
        assert await queue.store.claim(worker, clock(), 5, queue.kinds) is not None
        assert await queue.store.item_event(job.id, 0, worker, ItemEvent.START, clock())
        clock.advance(6)
    assert await Worker(queue).run_once()
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED
    assert final.counts.as_json() == {"total": 2, "done": 1, "failed": 1, "skipped": 0}
    assert seen == [1]
    rows = await queue.items("alice", job.id)
    assert rows[0].error_code == "attempts_exhausted"
    assert rows[0].attempts == 3


async def test_the_terminal_hook_runs_once_per_job_and_retries_after_failing(
    queue: JobQueue, clock: Clock
) -> None:
    attempts: list[str] = []
    fail_next = [True]

    async def flaky(job: Job) -> None:
        attempts.append(job.id)
        if fail_next[0]:
            fail_next[0] = False
            raise RuntimeError("ledger unavailable")

    queue.on_terminal(flaky)
    done = await queue.enqueue("alice", "echo", {})
    cancelled = await queue.enqueue("alice", "echo", {})
    await queue.cancel("alice", cancelled.id)  # delivered now, but the hook fails
    worker = Worker(queue, lease_seconds=5)
    assert await worker.run_once()  # delivered once
    assert attempts == [cancelled.id, done.id]
    assert not await queue.deliver_terminal("sweeper")  # the failed delivery is still leased
    clock.advance(61)
    assert await queue.deliver_terminal("sweeper")  # retried once the lease expired
    assert not await queue.deliver_terminal("sweeper")
    clock.advance(3600)
    assert not await queue.deliver_terminal("sweeper")
    assert sorted(attempts) == sorted([cancelled.id, cancelled.id, done.id])


async def test_a_queue_without_hooks_leaves_delivery_to_one_that_has_them(
    db: Database, clock: Clock
) -> None:
    api = JobQueue(db, clock=clock)  # a serving process without the billing hook

    async def nothing(ctx: JobContext) -> None:
        return None

    api.register("echo", nothing)
    job = await api.enqueue("alice", "echo", {})
    await api.cancel("alice", job.id)
    assert not await api.deliver_terminal("api")
    worker_side = JobQueue(db, clock=clock)
    worker_side.register("echo", nothing)
    calls = _hooked(worker_side)
    async with Worker(worker_side, poll_seconds=0.02):
        await eventually(lambda: _true(bool(calls)), "the worker delivered the hook")
    assert calls == [f"{job.id}:cancelled"]


async def _is(queue: JobQueue, job_id: str, state: JobState) -> bool:
    return await state_of(queue, "alice", job_id) is state


async def _true(value: bool) -> bool:
    return value


class FlakyStore:
    """The real store, except that completing item ``index`` fails once (a database hiccup)."""

    def __init__(self, store: Any, index: int) -> None:
        self._store = store
        self._index = index
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def item_event(
        self, job_id: str, index: int, worker_id: str, event: ItemEvent, now: float, **kwargs: Any
    ) -> Any:
        if index == self._index and event is ItemEvent.COMPLETE and not self.failed:
            self.failed = True
            raise ConnectionError("server closed the connection unexpectedly")
        return await self._store.item_event(job_id, index, worker_id, event, now, **kwargs)


async def test_a_store_failure_while_items_run_leaves_the_job_to_be_resumed(
    queue: JobQueue, clock: Clock
) -> None:
    from server.jobs.runner import StoreUnavailable

    flaky = FlakyStore(queue.store, 2)
    queue.store = flaky
    job = await queue.enqueue("alice", "rows", {}, list(range(6)))
    with pytest.raises(StoreUnavailable):
        await Worker(queue, lease_seconds=5).run_once()
    assert flaky.failed
    midway = await queue.get("alice", job.id)
    assert midway is not None
    assert midway.state is JobState.RUNNING  # not failed: the store, not the job, broke
    assert midway.counts.done < 6
    clock.advance(6)  # the lease runs out; the next claim resumes the open items
    assert await Worker(queue).run_once()
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED
    assert final.counts.as_json() == {"total": 6, "done": 6, "failed": 0, "skipped": 0}
    assert final.attempts == 2


async def test_an_idle_worker_wakes_for_a_new_job_without_polling(
    db: Database, db_url: tuple[str, str | None]
) -> None:
    """On PostgreSQL the enqueuing process is another one (its own engine): NOTIFY wakes the
    worker; on SQLite the worker shares the process, and the queue wakes it."""
    other = Database(db_url[0], schema=db_url[1]) if db_url[1] is not None else None
    producer = JobQueue(other or db)
    consumer = producer if other is None else JobQueue(db)
    for queue in {id(producer): producer, id(consumer): consumer}.values():

        async def echo(ctx: JobContext) -> Any:
            return ctx.payload

        queue.register("echo", echo)
    try:
        async with Worker(consumer, poll_seconds=600) as worker:  # it would sleep 10 minutes
            await worker.ready.wait()
            job = await producer.enqueue("alice", "echo", {"n": 1})
            await eventually(lambda: _is(producer, job.id, JobState.SUCCEEDED), "woken")
    finally:
        if other is not None:
            await other.dispose()
