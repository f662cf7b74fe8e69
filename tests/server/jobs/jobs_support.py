"""Helpers of the job tests: a hand-moved clock, polling without timing assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.jobs import JobQueue, JobState


@dataclass
class Clock:
    """A clock the test moves by hand (lease expiry without waiting)."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(check: Callable[[], Awaitable[bool]], what: str, tries: int = 1500) -> None:
    """Poll ``check`` until it is true (a guard against hanging, not a timing assertion)."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def state_of(queue: JobQueue, owner: str, job_id: str) -> JobState:
    """The job's current state."""
    job = await queue.get(owner, job_id)
    assert job is not None
    return job.state
