"""What a running handler sees: its job, progress reporting, cancellation, per-item completion.

Every write goes through the store as the job's lease holder: once the lease is lost (another
worker took the job over), writes do nothing and return False, and the worker stops the handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.jobs.models import Job, JobItem
from server.jobs.rules import (
    Counts,
    ItemEvent,
    ItemState,
    JobState,
    Limits,
    check_json,
    error_code,
    error_message,
)
from server.jobs.store import JobStore

__all__ = ["JobContext"]


class JobContext:
    """Handed to handlers; one per claimed job."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker_id: str,
        *,
        clock: Callable[[], float],
        limits: Limits,
        lease: float = 30.0,
    ) -> None:
        self.job = job
        self.lease = lease
        self.poll_seconds = min(1.0, lease / 6)
        self.worker_id = worker_id
        self.store = store
        self._clock = clock
        self.limits = limits
        self._cancelled = job.state is JobState.CANCEL_REQUESTED
        self.lease_lost = False

    @property
    def payload(self) -> Any:
        """The job's payload."""
        return self.job.payload

    def is_cancelled(self) -> bool:
        """The owner asked to cancel (as of the last heartbeat or item write)."""
        return self._cancelled

    def observe(self, state: JobState | None) -> None:
        """Note the job state a write returned (None: the lease was lost)."""
        if state is None:
            self.lease_lost = True
        elif state is JobState.CANCEL_REQUESTED:
            self._cancelled = True

    async def progress(
        self, done: int, *, total: int | None = None, failed: int = 0, skipped: int = 0
    ) -> bool:
        """Report progress of a job without items (its counts); False once the lease is lost."""
        counts = Counts(
            total if total is not None else self.job.counts.total, done, failed, skipped
        )
        if min(counts.as_json().values()) < 0 or counts.finished > counts.total:
            raise ValueError("progress counts must be >= 0 and add up to at most total")
        state = await self.store.set_counts(self.job.id, self.worker_id, counts, self._clock())
        self.observe(state)
        return state is not None

    async def open_items(self, *, after: int = -1, limit: int = 100) -> list[JobItem]:
        """Items not finished yet, in index order, above index ``after``."""
        return await self.store.open_items(self.job.id, after, limit)

    async def claim_items(self, limit: int) -> list[JobItem]:
        """Lease up to ``limit`` open rows for this worker (marked running, one more attempt)."""
        return await self.store.claim_items(
            self.job.id, self.worker_id, self._clock(), self.lease, limit
        )

    async def start_item(self, index: int) -> int | None:
        """Mark an item running; its attempts so far, or None if it is not open or the lease
        was lost."""
        outcome = await self.store.item_event(
            self.job.id, index, self.worker_id, ItemEvent.START, self._clock()
        )
        if outcome is None:
            return None
        return outcome[1]

    async def complete_item(self, index: int, result: Any = None) -> bool:
        """Record an item's result; True only for the write that completed it.

        A result over the size limit fails the item (``result_too_large``) instead.
        """
        try:
            check_json(
                result, limit=self.limits.item_result_bytes, depth=self.limits.depth, field="result"
            )
        except ValueError:
            return await self.fail_item(index, "result_too_large")
        return await self._item(index, ItemEvent.COMPLETE, result=result)

    async def fail_item(self, index: int, code: str, message: str | None = None) -> bool:
        """Fail one item with a public code (and message); the job goes on."""
        code = error_code(code)
        result = {"error": {"code": code, "message": error_message(message)}}
        return await self._item(index, ItemEvent.FAIL, result=result, code=code)

    async def skip_item(self, index: int, code: str = "skipped") -> bool:
        """Skip one item (not charged); ``code`` says why."""
        return await self._item(index, ItemEvent.SKIP, code=error_code(code))

    async def _item(
        self, index: int, event: ItemEvent, *, result: Any = None, code: str | None = None
    ) -> bool:
        outcome = await self.store.item_event(
            self.job.id,
            index,
            self.worker_id,
            event,
            self._clock(),
            result=result,
            error_code=code,
        )
        if outcome is None:
            return False
        state, _, job_state = outcome
        if job_state is not None:
            self.observe(job_state)
        return state is not ItemState.RUNNING
