"""The job store: every read and write of the ``jobs`` and ``job_items`` tables.

One interface (:class:`JobStore`), two backends on the server database: SQLite (the embedded
default; one UPDATE takes the database's write lock, so a claim needs no row lock) and
PostgreSQL (the claim's sub-select takes the row with ``FOR UPDATE SKIP LOCKED``, so workers on
several machines never wait on each other's rows). Each state change is one conditional UPDATE
built from :mod:`server.jobs.rules`: it applies only in the states the event allows, and only for
the lease holder where the event needs the lease, so a worker whose lease expired cannot finish
a job or an item that another worker took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.engine import Database
from server.db.models import JobItemRow, JobRow
from server.jobs.errors import JobBusy, JobFinished, JobNotFound
from server.jobs.models import Job, JobItem, Page
from server.jobs.rules import (
    TERMINAL,
    Counts,
    ItemEvent,
    ItemState,
    JobEvent,
    JobState,
    count_column,
    item_effect,
    job_effect,
)

__all__ = ["JobStore", "PostgresJobStore", "SqliteJobStore", "open_store"]

log = logging.getLogger(__name__)

jobs: sa.Table = JobRow.__table__  # type: ignore[assignment]
items: sa.Table = JobItemRow.__table__  # type: ignore[assignment]
J = jobs.c
I = items.c  # noqa: E741
_INSERT_CHUNK = 500
_LEASED = (JobState.RUNNING.value, JobState.CANCEL_REQUESTED.value)
_OPEN_ITEMS = (ItemState.PENDING.value, ItemState.RUNNING.value)
_TERMINAL = tuple(s.value for s in TERMINAL)


class JobStore(Protocol):
    """What the queue, the worker and the handler context need from a backend."""

    async def insert(self, row: Mapping[str, Any], inputs: Sequence[Any]) -> Job:
        """Store a new job and its items in one transaction (:class:`JobBusy` when an unfinished
        job holds the row's ``exclusive_key``)."""

    async def get(self, job_id: str, owner_id: str | None = None) -> Job | None:
        """The job, if it exists (and belongs to ``owner_id`` when given)."""

    async def list_jobs(
        self, owner_id: str, before: str | None, limit: int, kind: str | None
    ) -> Page:
        """The owner's jobs, newest first, with ids below ``before``."""

    async def list_items(self, job_id: str, after: int, limit: int) -> list[JobItem]:
        """Items with an index above ``after``, in index order."""

    async def open_items(self, job_id: str, after: int, limit: int) -> list[JobItem]:
        """Unfinished items (pending, or left running by a crashed worker) above ``after``."""

    async def count_items(self, job_id: str, error_code: str) -> int:
        """How many of the job's items ended with ``error_code`` (one COUNT, no rows read)."""

    async def cancel(self, owner_id: str, job_id: str, now: float) -> Job:
        """Apply CANCEL; :class:`JobNotFound` or :class:`JobFinished` otherwise."""

    async def claim(
        self, worker_id: str, now: float, lease: float, kinds: Sequence[str]
    ) -> Job | None:
        """Lease the oldest claimable job of one of ``kinds`` (queued, or its lease expired)."""

    async def heartbeat(
        self, job_id: str, worker_id: str, now: float, lease: float
    ) -> JobState | None:
        """Extend the lease; the job's state, or None when the lease was lost."""

    async def release(self, job_id: str, worker_id: str, now: float) -> bool:
        """Give the job back at once (the interrupted attempt does not count)."""

    async def finish(
        self,
        job_id: str,
        worker_id: str,
        event: JobEvent,
        now: float,
        *,
        result: Any = None,
        error: tuple[str, str] | None = None,
    ) -> Job | None:
        """Apply SUCCEED, FAIL or ACKNOWLEDGE_CANCEL as the lease holder; None if not allowed."""

    async def set_counts(
        self, job_id: str, worker_id: str, counts: Counts, now: float
    ) -> JobState | None:
        """Set the progress counts of a job without items; its state, or None without lease."""

    async def item_event(
        self,
        job_id: str,
        index: int,
        worker_id: str,
        event: ItemEvent,
        now: float,
        *,
        result: Any = None,
        error_code: str | None = None,
    ) -> tuple[ItemState, int, JobState | None] | None:
        """Apply an item event as the job's lease holder, counting a terminal item once.

        Returns (item state, item attempts, job state after) or None when not applied.
        """

    async def claim_items(
        self, job_id: str, worker_id: str, now: float, lease: float, limit: int
    ) -> list[JobItem]:
        """Lease up to ``limit`` open rows (pending, or running with an expired row lease) of an
        active job, marked running with one more attempt, in index order."""

    async def extend_items(
        self, job_id: str, worker_id: str, now: float, lease: float
    ) -> JobState | None:
        """Extend the leases of the rows ``worker_id`` runs; the job state (None: not active)."""

    async def join(self, worker_id: str, now: float, kinds: Sequence[str]) -> Job | None:
        """An active, leased job of one of ``kinds`` with rows to claim (to help with its rows)."""

    async def claim_hook(
        self, worker_id: str, now: float, lease: float, job_id: str | None = None
    ) -> Job | None:
        """Lease the delivery of a terminal job's hook (that job, or any pending one)."""

    async def mark_hooked(self, job_id: str, worker_id: str, now: float) -> bool:
        """Record that the hook returned; it is never delivered again."""

    def listen(self, wake: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """While open, call ``wake()`` when another process enqueues or gives a job back."""


P = ParamSpec("P")
T = TypeVar("T")


def _whole(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a store call to its end even if the caller is cancelled (a lost lease, a stop past
    the grace period, a sibling item failing): a transaction cut off half-way through on
    aiosqlite keeps SQLite's write lock on a pooled connection, and every other writer then
    waits out its busy timeout."""

    @functools.wraps(method)
    async def whole(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(method(*args, **kwargs))
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)
        return await asyncio.shield(task)

    return whole


_IN_FLIGHT: set[asyncio.Future[Any]] = set()


async def settle_store_calls() -> None:
    """Wait for store calls still running after their callers were cancelled, so a caller that
    gives up (a failed item, a stop) leaves no write landing later (e.g. after a lease moved)."""
    while pending := [t for t in _IN_FLIGHT if not t.done()]:
        await asyncio.gather(*pending, return_exceptions=True)


def _case(effect: Mapping[Any, Any], column: sa.ColumnElement[Any]) -> sa.Case[Any]:
    return sa.case({s.value: t.value for s, t in effect.items()}, value=column)


class _SqlJobStore:
    """The statements both backends share; subclasses say how a claim locks its row."""

    skip_locked = False

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine: AsyncEngine = db.engine

    def _lock(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.with_for_update(skip_locked=True) if self.skip_locked else select

    async def _announce(self, conn: AsyncConnection) -> None:
        """Tell listening workers there is work (on commit); SQLite workers poll instead."""

    @contextlib.asynccontextmanager
    async def listen(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        """SQLite: nothing to listen to (workers in the process are woken by the queue)."""
        yield

    # --- callers --------------------------------------------------------------------------

    @_whole
    async def insert(self, row: Mapping[str, Any], inputs: Sequence[Any]) -> Job:
        async with self.engine.begin() as conn:
            try:
                await conn.execute(sa.insert(jobs).values(**row))
            except IntegrityError as exc:
                key = row.get("exclusive_key")
                if key is None or "exclusive_key" not in str(exc.orig):
                    raise
                raise JobBusy(key) from None
            for start in range(0, len(inputs), _INSERT_CHUNK):
                chunk = inputs[start : start + _INSERT_CHUNK]
                await conn.execute(
                    sa.insert(items),
                    [
                        {
                            "job_id": row["id"],
                            "idx": start + offset,
                            "input": value,
                            "state": ItemState.PENDING.value,
                            "result": None,
                            "error_code": None,
                            "attempts": 0,
                            "updated_at": row["created_at"],
                        }
                        for offset, value in enumerate(chunk)
                    ],
                )
            await self._announce(conn)
        return Job.from_row(row)

    @_whole
    async def get(self, job_id: str, owner_id: str | None = None) -> Job | None:
        query = sa.select(jobs).where(J.id == job_id)
        if owner_id is not None:
            query = query.where(J.owner_id == owner_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return Job.from_row(row) if row is not None else None

    @_whole
    async def list_jobs(
        self, owner_id: str, before: str | None, limit: int, kind: str | None
    ) -> Page:
        query = sa.select(jobs).where(J.owner_id == owner_id)
        if kind is not None:
            query = query.where(J.kind == kind)
        if before is not None:
            query = query.where(J.id < before)
        query = query.order_by(J.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        data = [Job.from_row(row) for row in rows[:limit]]
        return Page(data, data[-1].id if len(rows) > limit else None)

    @_whole
    async def list_items(self, job_id: str, after: int, limit: int) -> list[JobItem]:
        query = (
            sa.select(items).where(I.job_id == job_id, I.idx > after).order_by(I.idx).limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [JobItem.from_row(row) for row in rows]

    @_whole
    async def count_items(self, job_id: str, error_code: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(items)
            .where(I.job_id == job_id, I.error_code == error_code)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    @_whole
    async def open_items(self, job_id: str, after: int, limit: int) -> list[JobItem]:
        """Items not finished yet (pending, or left running by a crashed worker)."""
        query = (
            sa.select(items)
            .where(I.job_id == job_id, I.idx > after, I.state.in_(_OPEN_ITEMS))
            .order_by(I.idx)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [JobItem.from_row(row) for row in rows]

    @_whole
    async def cancel(self, owner_id: str, job_id: str, now: float) -> Job:
        effect = job_effect(JobEvent.CANCEL)
        ends = [s.value for s, t in effect.items() if t in TERMINAL]
        stmt = (
            sa.update(jobs)
            .where(
                J.id == job_id,
                J.owner_id == owner_id,
                J.state.in_([s.value for s in effect]),
            )
            .values(
                state=_case(effect, J.state),
                updated_at=now,
                finished_at=sa.case((J.state.in_(ends), now), else_=J.finished_at),
            )
            .returning(*jobs.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        if row is not None:
            return Job.from_row(row)
        job = await self.get(job_id, owner_id)
        if job is None:
            raise JobNotFound(job_id)
        raise JobFinished(job_id, job.state.value)

    # --- workers --------------------------------------------------------------------------

    @staticmethod
    def _claimable(now: float) -> sa.ColumnElement[bool]:
        return sa.or_(
            J.state == JobState.QUEUED.value,
            sa.and_(J.state.in_(_LEASED), J.lease_expires < now),
        )

    @_whole
    async def claim(
        self, worker_id: str, now: float, lease: float, kinds: Sequence[str]
    ) -> Job | None:
        if not kinds:
            return None
        effect = job_effect(JobEvent.CLAIM)
        pick = self._lock(
            sa.select(J.id)
            .where(J.kind.in_(list(kinds)), self._claimable(now))
            .order_by(J.id)
            .limit(1)
        )
        stmt = (
            sa.update(jobs)
            .where(J.id == pick.scalar_subquery(), self._claimable(now))
            .values(
                state=_case(effect, J.state),
                lease_owner=worker_id,
                lease_expires=now + lease,
                attempts=J.attempts + 1,
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return Job.from_row(row) if row is not None else None

    @staticmethod
    def _held(job_id: str, worker_id: str, states: Sequence[str]) -> sa.ColumnElement[bool]:
        return sa.and_(J.id == job_id, J.lease_owner == worker_id, J.state.in_(list(states)))

    @_whole
    async def heartbeat(
        self, job_id: str, worker_id: str, now: float, lease: float
    ) -> JobState | None:
        stmt = (
            sa.update(jobs)
            .where(self._held(job_id, worker_id, _LEASED))
            .values(lease_expires=now + lease)
            .returning(J.state)
        )
        async with self.engine.begin() as conn:
            state = (await conn.execute(stmt)).scalar()
        return JobState(state) if state is not None else None

    @_whole
    async def release(self, job_id: str, worker_id: str, now: float) -> bool:
        stmt = (
            sa.update(jobs)
            .where(self._held(job_id, worker_id, _LEASED))
            .values(
                lease_owner=None,
                lease_expires=0.0,
                attempts=sa.case((J.attempts > 0, J.attempts - 1), else_=0),
                updated_at=now,
            )
        )
        async with self.engine.begin() as conn:
            released = (await conn.execute(stmt)).rowcount == 1
            if released:
                await self._announce(conn)
        return released

    @_whole
    async def finish(
        self,
        job_id: str,
        worker_id: str,
        event: JobEvent,
        now: float,
        *,
        result: Any = None,
        error: tuple[str, str] | None = None,
    ) -> Job | None:
        effect = job_effect(event)
        stmt = (
            sa.update(jobs)
            .where(self._held(job_id, worker_id, [s.value for s in effect]))
            .values(
                state=_case(effect, J.state),
                result=result,
                error_code=error[0] if error else None,
                error_message=error[1] if error else None,
                updated_at=now,
                finished_at=now,
                lease_owner=None,
                lease_expires=None,
            )
            .returning(*jobs.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return Job.from_row(row) if row is not None else None

    @_whole
    async def set_counts(
        self, job_id: str, worker_id: str, counts: Counts, now: float
    ) -> JobState | None:
        stmt = (
            sa.update(jobs)
            .where(self._held(job_id, worker_id, _LEASED))
            .values(**counts.as_json(), updated_at=now)
            .returning(J.state)
        )
        async with self.engine.begin() as conn:
            state = (await conn.execute(stmt)).scalar()
        return JobState(state) if state is not None else None

    @_whole
    async def item_event(
        self,
        job_id: str,
        index: int,
        worker_id: str,
        event: ItemEvent,
        now: float,
        *,
        result: Any = None,
        error_code: str | None = None,
    ) -> tuple[ItemState, int, JobState | None] | None:
        effect = item_effect(event)
        active = sa.exists().where(J.id == job_id, J.state.in_(_LEASED))
        held_job = sa.exists().where(self._held(job_id, worker_id, _LEASED))
        # A claimed row belongs to its row lease holder; an unclaimed one to the job's holder.
        held = sa.and_(
            active,
            sa.or_(
                I.lease_owner == worker_id,
                sa.and_(I.lease_owner.is_(None), held_job),
            ),
        )
        values: dict[str, Any] = {"state": _case(effect, I.state), "updated_at": now}
        if event is ItemEvent.START:
            values["attempts"] = I.attempts + 1
        else:
            values["result"] = result
            values["error_code"] = error_code
        stmt = (
            sa.update(items)
            .where(
                I.job_id == job_id,
                I.idx == index,
                I.state.in_([s.value for s in effect]),
                held,
            )
            .values(**values)
            .returning(I.state, I.attempts)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            state = ItemState(row[0])
            job_state = await self._count(conn, job_id, state, now)
        return state, row[1], job_state

    @staticmethod
    def _claimable_item(now: float) -> sa.ColumnElement[bool]:
        return sa.or_(
            I.state == ItemState.PENDING.value,
            sa.and_(
                I.state == ItemState.RUNNING.value,
                sa.or_(I.lease_expires.is_(None), I.lease_expires < now),
            ),
        )

    @_whole
    async def claim_items(
        self, job_id: str, worker_id: str, now: float, lease: float, limit: int
    ) -> list[JobItem]:
        if limit < 1:
            return []
        pick = self._lock(
            sa.select(I.idx)
            .where(I.job_id == job_id, self._claimable_item(now))
            .order_by(I.idx)
            .limit(limit)
        )
        async with self.engine.begin() as conn:
            if self.skip_locked:
                # Lock the rows first: as a sub-select of the UPDATE, PostgreSQL may run a
                # SKIP LOCKED pick again and take more than ``limit`` rows.
                picked: Any = list((await conn.execute(pick)).scalars())
                if not picked:
                    return []
            else:  # SQLite: one UPDATE holds the write lock while its sub-select runs
                picked = pick.scalar_subquery()
            stmt = self._claim_rows(job_id, picked, worker_id, now, lease)
            rows = (await conn.execute(stmt)).mappings().all()
        return sorted((JobItem.from_row(row) for row in rows), key=lambda item: item.index)

    def _claim_rows(
        self, job_id: str, picked: Any, worker_id: str, now: float, lease: float
    ) -> sa.Update:
        return (
            sa.update(items)
            .where(
                I.job_id == job_id,
                I.idx.in_(picked),
                self._claimable_item(now),
                # no row is started once a cancel was asked
                sa.exists().where(J.id == job_id, J.state == JobState.RUNNING.value),
            )
            .values(
                state=ItemState.RUNNING.value,
                attempts=I.attempts + 1,
                lease_owner=worker_id,
                lease_expires=now + lease,
                updated_at=now,
            )
            .returning(*items.c)
        )

    @_whole
    async def extend_items(
        self, job_id: str, worker_id: str, now: float, lease: float
    ) -> JobState | None:
        stmt = (
            sa.update(items)
            .where(
                I.job_id == job_id,
                I.lease_owner == worker_id,
                I.state == ItemState.RUNNING.value,
            )
            .values(lease_expires=now + lease)
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)
            state = (
                await conn.execute(sa.select(J.state).where(J.id == job_id, J.state.in_(_LEASED)))
            ).scalar()
        return JobState(state) if state is not None else None

    @_whole
    async def join(self, worker_id: str, now: float, kinds: Sequence[str]) -> Job | None:
        if not kinds:
            return None
        open_row = sa.exists().where(I.job_id == J.id, self._claimable_item(now))
        query = (
            sa.select(jobs)
            .where(
                J.kind.in_(list(kinds)),
                J.state == JobState.RUNNING.value,
                J.lease_expires >= now,
                open_row,
            )
            .order_by(J.id)
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return Job.from_row(row) if row is not None else None

    @staticmethod
    async def _count(
        conn: AsyncConnection, job_id: str, state: ItemState, now: float
    ) -> JobState | None:
        column = count_column(state)
        if column is None:
            return None
        stmt = (
            sa.update(jobs)
            .where(J.id == job_id)
            .values({column: J[column] + 1, "updated_at": now})
            .returning(J.state)
        )
        value = (await conn.execute(stmt)).scalar()
        return JobState(value) if value is not None else None

    # --- terminal hook --------------------------------------------------------------------

    @_whole
    async def claim_hook(
        self, worker_id: str, now: float, lease: float, job_id: str | None = None
    ) -> Job | None:
        pending = sa.and_(
            J.state.in_(_TERMINAL),
            J.hooked_at.is_(None),
            sa.or_(J.lease_owner.is_(None), J.lease_expires < now),
        )
        if job_id is not None:
            target: sa.ColumnElement[bool] = J.id == job_id
        else:
            pick = self._lock(sa.select(J.id).where(pending).order_by(J.id).limit(1))
            target = J.id == pick.scalar_subquery()
        stmt = (
            sa.update(jobs)
            .where(target, pending)
            .values(lease_owner=worker_id, lease_expires=now + lease)
            .returning(*jobs.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return Job.from_row(row) if row is not None else None

    @_whole
    async def mark_hooked(self, job_id: str, worker_id: str, now: float) -> bool:
        stmt = (
            sa.update(jobs)
            .where(J.id == job_id, J.lease_owner == worker_id, J.hooked_at.is_(None))
            .values(hooked_at=now, lease_owner=None, lease_expires=None)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1


class SqliteJobStore(_SqlJobStore):
    """SQLite: each claim is one UPDATE, which holds the database's write lock while it runs."""


class PostgresJobStore(_SqlJobStore):
    """PostgreSQL: the claim's sub-select skips rows other workers are claiming right now, and
    ``NOTIFY`` wakes idle workers on other machines at once (polling remains the fallback)."""

    skip_locked = True

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.channel = "bavlio_jobs" + (f"_{db.schema}" if db.schema else "")

    async def _announce(self, conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": self.channel})

    @contextlib.asynccontextmanager
    async def listen(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        """Hold one connection that ``LISTEN``s on the channel; without it, workers poll."""

        def notified(*_: Any) -> None:
            wake()

        conn: AsyncConnection | None = None
        driver: Any = None
        try:
            conn = await self.engine.connect()
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.add_listener(self.channel, notified)
        except Exception:
            log.warning("cannot LISTEN for new jobs; polling instead", exc_info=True)
            driver = None
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                if driver is not None:
                    await driver.remove_listener(self.channel, notified)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()


def open_store(db: Database) -> SqliteJobStore | PostgresJobStore:
    """The store for ``db``'s backend."""
    if db.dialect == "postgresql":
        return PostgresJobStore(db)
    if db.dialect == "sqlite":
        return SqliteJobStore(db)
    raise ValueError(f"no job store for {db.dialect!r}")  # pragma: no cover - settings refuse it
