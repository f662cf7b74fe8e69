"""Run one claimed job to its end: the handler or the items, a heartbeat, the terminal hook.

What a handler raises decides the outcome: ``JobError`` fails the job with its public code and
message, ``JobCancelled`` acknowledges a cancel, anything else fails it with a generic code and
message (the exception goes to the log only: its text may hold secrets or internals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from server.jobs.context import JobContext
from server.jobs.errors import JobCancelled, JobError, JobInputError, SkipItem
from server.jobs.models import Job, JobItem
from server.jobs.queue import JobQueue, Registration
from server.jobs.rules import (
    GENERIC_CODE,
    GENERIC_MESSAGE,
    JobEvent,
    JobState,
    check_json,
    error_code,
    error_message,
)
from server.jobs.store import settle_store_calls

__all__ = ["StoreUnavailable", "help_job", "run_job"]

log = logging.getLogger(__name__)

Outcome = tuple[JobEvent, Any, tuple[str, str] | None]


async def run_job(queue: JobQueue, job: Job, worker_id: str, *, lease: float) -> Job | None:
    """Run a job this worker just claimed; the terminal job, or None if the lease was lost.

    Cancelled from outside (worker shutdown past its grace period), it gives the job back at
    once so another worker resumes it, and re-raises.
    """
    registration = queue.registration(job.kind)
    ctx = JobContext(
        queue.store, job, worker_id, clock=queue.clock, limits=queue.limits, lease=lease
    )
    if job.state is JobState.CANCEL_REQUESTED:
        outcome: Outcome = (JobEvent.ACKNOWLEDGE_CANCEL, None, None)
    elif job.attempts > registration.max_attempts:
        message = f"the job was interrupted {job.attempts - 1} times"
        outcome = (JobEvent.FAIL, None, ("attempts_exhausted", message))
    else:
        work = asyncio.create_task(_execute(registration, ctx))
        beat = asyncio.create_task(_heartbeat(queue, ctx, work, lease))
        try:
            outcome = await work
        except asyncio.CancelledError:
            if ctx.lease_lost:
                return None
            with contextlib.suppress(Exception):
                await asyncio.shield(queue.store.release(job.id, worker_id, queue.clock()))
            raise
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
    event, result, error = outcome
    finished = await queue.store.finish(
        job.id, worker_id, event, queue.clock(), result=result, error=error
    )
    if finished is None:  # the lease expired meanwhile; the new holder finishes the job
        return None
    await queue.deliver_terminal(worker_id, finished.id, lease=lease)
    return finished


async def _heartbeat(
    queue: JobQueue, ctx: JobContext, work: asyncio.Task[Any], lease: float
) -> None:
    """Extend the lease every third of it; stop the work once the lease is lost."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            state = await queue.store.heartbeat(ctx.job.id, ctx.worker_id, queue.clock(), lease)
        except Exception:  # a database hiccup: try again; the lease outlives two misses
            log.warning("heartbeat failed for job %s", ctx.job.id, exc_info=True)
            continue
        ctx.observe(state)
        if state is not None:
            with contextlib.suppress(Exception):
                await queue.store.extend_items(ctx.job.id, ctx.worker_id, queue.clock(), lease)
        if state is None:
            log.warning("lost the lease of job %s; another worker resumes it", ctx.job.id)
            work.cancel()
            return


class StoreUnavailable(Exception):
    """The store failed while the items ran: the job is not failed for it; its lease expires
    and a worker resumes the open items."""


async def _execute(registration: Registration, ctx: JobContext) -> Outcome:
    """The handler's outcome as (event, result, error)."""
    if registration.item_handler is not None:
        try:
            await _run_items(registration, ctx)
            fresh = await ctx.store.get(ctx.job.id)
        except Exception as exc:  # item handlers' own errors are caught per item
            await settle_store_calls()  # cancelled siblings' writes land before we give up
            raise StoreUnavailable(f"job {ctx.job.id}: the store failed") from exc
        if ctx.is_cancelled():
            return JobEvent.ACKNOWLEDGE_CANCEL, None, None
        if fresh is not None:
            ctx.job = fresh
        if registration.handler is None:
            return JobEvent.SUCCEED, ctx.job.counts.as_json(), None
    assert registration.handler is not None
    try:
        result = await registration.handler(ctx)
    except JobCancelled:
        if ctx.is_cancelled():
            return JobEvent.ACKNOWLEDGE_CANCEL, None, None
        return JobEvent.FAIL, None, ("cancelled", "the job stopped itself")
    except JobError as exc:
        return JobEvent.FAIL, None, (error_code(exc.code), error_message(exc.message))
    except Exception:
        log.exception("job %s (%s) failed", ctx.job.id, ctx.job.kind)
        return JobEvent.FAIL, None, (GENERIC_CODE, GENERIC_MESSAGE)
    limits = ctx.limits
    try:
        check_json(result, limit=limits.result_bytes, depth=limits.depth, field="result")
    except JobInputError as exc:
        log.error("job %s (%s) returned a bad result: %s", ctx.job.id, ctx.job.kind, exc)
        return (
            JobEvent.FAIL,
            None,
            (
                "result_too_large" if exc.too_large else GENERIC_CODE,
                "the job's result could not be stored",
            ),
        )
    return JobEvent.SUCCEED, result, None


async def _run_items(registration: Registration, ctx: JobContext, *, wait: bool = True) -> None:
    """Claim open rows (row leases) and run them, ``item_concurrency`` at a time, until none is
    left or the job is cancelled. ``wait``: rows other workers hold are waited for (the job's
    lease holder finishes the job only once every row ended); a helper stops instead."""
    limit = registration.item_concurrency
    running: set[asyncio.Task[None]] = set()
    async with asyncio.TaskGroup() as group:
        while not (ctx.is_cancelled() or ctx.lease_lost):
            free = limit - len(running)
            batch = await ctx.claim_items(free) if free else []
            if not batch:
                if running:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if not wait or not await ctx.open_items(limit=1):
                    break
                await asyncio.sleep(ctx.poll_seconds)  # other workers hold the last rows
                continue
            for item in batch:
                task = group.create_task(_run_item(registration, ctx, item))
                running.add(task)
                task.add_done_callback(running.discard)


async def help_job(queue: JobQueue, job: Job, worker_id: str, *, lease: float) -> None:
    """Run rows of a job another worker holds (several workers share one bulk job); the job's
    holder finishes the job once every row ended, so it is finished and hooked once."""
    registration = queue.registration(job.kind)
    if registration.item_handler is None:
        return
    ctx = JobContext(
        queue.store, job, worker_id, clock=queue.clock, limits=queue.limits, lease=lease
    )
    work = asyncio.create_task(_run_items(registration, ctx, wait=False))
    beat = asyncio.create_task(_beat_rows(queue, ctx, work, lease))
    try:
        await work
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat


async def _beat_rows(
    queue: JobQueue, ctx: JobContext, work: asyncio.Task[Any], lease: float
) -> None:
    """A helper's heartbeat: extend its row leases; stop once the job is no longer active."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            state = await queue.store.extend_items(ctx.job.id, ctx.worker_id, queue.clock(), lease)
        except Exception:
            log.warning("row heartbeat failed for job %s", ctx.job.id, exc_info=True)
            continue
        ctx.observe(state)
        if state is None:
            work.cancel()
            return


async def _run_item(registration: Registration, ctx: JobContext, item: JobItem) -> None:
    if item.attempts > registration.max_item_attempts:
        message = f"the row was interrupted {item.attempts - 1} times"
        await ctx.fail_item(item.index, "attempts_exhausted", message)
        return
    assert registration.item_handler is not None
    try:
        result = await registration.item_handler(ctx, item)
    except SkipItem as exc:
        await ctx.skip_item(item.index, exc.code)
    except JobError as exc:
        await ctx.fail_item(item.index, exc.code, exc.message)
    except Exception:
        log.exception("job %s item %d failed", ctx.job.id, item.index)
        await ctx.fail_item(item.index, GENERIC_CODE)
    else:
        await ctx.complete_item(item.index, result)
