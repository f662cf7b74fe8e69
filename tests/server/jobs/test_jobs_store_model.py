"""The store against the pure rules: random sequences of claims, heartbeats, releases, cancels,
finishes and item events by two workers on a moving clock; after every step the stored job and
items equal what :mod:`server.jobs.rules` predicts (each conditional UPDATE is the table)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobs_support import db_url_fixture  # noqa: F401 (fixtures)

from server.db.engine import Database
from server.jobs import JobFinished, JobQueue
from server.jobs.rules import (
    Counts,
    ItemEvent,
    ItemState,
    JobEvent,
    JobState,
    counts_after,
    item_effect,
    job_effect,
)

LEASE = 30.0
ITEMS = 3
LEASED = (JobState.RUNNING, JobState.CANCEL_REQUESTED)

workers = st.sampled_from(["w1", "w2"])
ops = st.one_of(
    st.tuples(st.just("claim"), workers),
    st.tuples(st.just("heartbeat"), workers),
    st.tuples(st.just("release"), workers),
    st.tuples(st.just("cancel")),
    st.tuples(
        st.just("finish"),
        workers,
        st.sampled_from([JobEvent.SUCCEED, JobEvent.FAIL, JobEvent.ACKNOWLEDGE_CANCEL]),
    ),
    st.tuples(
        st.just("item"), workers, st.integers(0, ITEMS - 1), st.sampled_from(list(ItemEvent))
    ),
    st.tuples(st.just("advance"), st.sampled_from([1.0, 20.0, 40.0])),
)


@dataclass
class Model:
    """What the rules say the row should hold."""

    now: float = 1_000.0
    state: JobState = JobState.QUEUED
    owner: str | None = None
    expires: float | None = None
    attempts: int = 0
    items: list[ItemState] = field(default_factory=lambda: [ItemState.PENDING] * ITEMS)
    counts: Counts = field(default_factory=lambda: Counts(total=ITEMS))

    def held(self, worker: str) -> bool:
        return self.owner == worker and self.state in LEASED


async def _step(queue: JobQueue, model: Model, job_id: str, op: tuple[Any, ...]) -> None:
    store = queue.store
    name = op[0]
    if name == "advance":
        model.now += op[1]
    elif name == "claim":
        claimable = model.state is JobState.QUEUED or (
            model.state in LEASED and model.expires is not None and model.expires < model.now
        )
        job = await store.claim(op[1], model.now, LEASE, queue.kinds)
        assert (job is not None) == claimable
        if claimable:
            model.state = job_effect(JobEvent.CLAIM)[model.state]
            model.owner, model.expires = op[1], model.now + LEASE
            model.attempts += 1
    elif name == "heartbeat":
        state = await store.heartbeat(job_id, op[1], model.now, LEASE)
        assert state == (model.state if model.held(op[1]) else None)
        if model.held(op[1]):
            model.expires = model.now + LEASE
    elif name == "release":
        held = model.held(op[1])
        assert await store.release(job_id, op[1], model.now) == held
        if held:
            model.owner, model.expires = None, 0.0
            model.attempts = max(model.attempts - 1, 0)
    elif name == "cancel":
        effect = job_effect(JobEvent.CANCEL)
        try:
            job = await store.cancel("alice", job_id, model.now)
        except JobFinished:
            assert model.state not in effect
        else:
            assert model.state in effect
            model.state = effect[model.state]
            assert job.state is model.state
    elif name == "finish":
        effect = job_effect(op[2])
        allowed = model.owner == op[1] and model.state in effect
        job = await store.finish(job_id, op[1], op[2], model.now)
        assert (job is not None) == allowed
        if allowed:
            model.state = effect[model.state]
            model.owner = model.expires = None
    else:
        _, worker, index, event = op
        effect = item_effect(event)
        allowed = model.held(worker) and model.items[index] in effect
        outcome = await store.item_event(job_id, index, worker, event, model.now)
        assert (outcome is not None) == allowed
        if allowed:
            before, after = model.items[index], effect[model.items[index]]
            model.counts = counts_after(model.counts, before, after)
            model.items[index] = after


async def _scenario(url: str, schema: str | None, steps: list[tuple[Any, ...]]) -> None:
    db = Database(url, schema=schema)
    try:
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM job_items"))
            await conn.execute(sa.text("DELETE FROM jobs"))
        model = Model()
        queue = JobQueue(db, clock=lambda: model.now)

        async def nothing(ctx: Any, item: Any) -> None:  # pragma: no cover - never run
            return None

        queue.register("rows", item_handler=nothing)
        job = await queue.enqueue("alice", "rows", {}, list(range(ITEMS)))
        for step in steps:
            await _step(queue, model, job.id, step)
            stored = await queue.get("alice", job.id)
            assert stored is not None
            assert (stored.state, stored.attempts, stored.counts) == (
                model.state,
                model.attempts,
                model.counts,
            ), step
            items = await queue.items("alice", job.id)
            assert [i.state for i in items] == model.items, step
    finally:
        await db.dispose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, min_size=1, max_size=25))
def test_the_store_follows_the_rules(db_url: tuple[str, str | None], steps: list[Any]) -> None:
    asyncio.run(_scenario(db_url[0], db_url[1], steps))
