"""The worker: N slots each claiming and running one job at a time, a terminal-hook sweeper,
and a graceful stop (finish what runs within the grace period, give the rest back).

Runs inside ``bavlio serve`` for the embedded SQLite default, or as ``bavlio worker`` processes,
as many as wanted, on one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from server.background import BackgroundLoop
from server.jobs.queue import JobQueue
from server.jobs.runner import help_job, run_job

__all__ = ["Worker"]

log = logging.getLogger(__name__)


class Worker(BackgroundLoop):
    """Runs jobs of the queue's registered kinds until :meth:`stop`."""

    def __init__(
        self,
        queue: JobQueue,
        *,
        concurrency: int = 4,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        grace_seconds: float = 30.0,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1 or lease_seconds <= 0 or poll_seconds <= 0 or grace_seconds < 0:
            raise ValueError("concurrency >= 1, lease and poll > 0, grace >= 0")
        self.queue = queue
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.worker_id = worker_id or (
            f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the worker listens for new jobs (PostgreSQL) and its slots run."""
        self._task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Stop claiming; running jobs get ``grace_seconds`` to finish, then are given back."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (or until cancelled, which stops the same way)."""
        tasks = [asyncio.create_task(self._slot()) for _ in range(self.concurrency)]
        tasks.append(asyncio.create_task(self._hooks()))
        log.info(
            "worker %s: %d slots for %s",
            self.worker_id,
            self.concurrency,
            ", ".join(self.queue.kinds) or "no kinds",
        )
        try:
            async with self.queue.store.listen(self.queue.wake):
                self.ready.set()
                await self._stopping.wait()
        finally:
            self._stopping.set()
            _, late = await asyncio.wait(tasks, timeout=self.grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_once(self) -> bool:
        """Claim and run one job if there is one (for tests and tools); whether one ran."""
        job = await self.queue.store.claim(
            self.worker_id, self.queue.clock(), self.lease_seconds, self.queue.kinds
        )
        if job is None:
            helped = await self.queue.store.join(
                self.worker_id, self.queue.clock(), self.queue.kinds
            )
            if helped is None:
                return False
            await help_job(self.queue, helped, self.worker_id, lease=self.lease_seconds)
            return True
        await run_job(self.queue, job, self.worker_id, lease=self.lease_seconds)
        return True

    async def _slot(self) -> None:
        while not self._stopping.is_set():
            try:
                ran = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: log, wait, try again
                log.exception("worker %s: claiming or running a job failed", self.worker_id)
                ran = False
            if not ran:
                await self._idle()

    async def _hooks(self) -> None:
        """Deliver terminal hooks left pending (by a crash, or by a process without hooks)."""
        if not self.queue.has_hooks:
            return
        while not self._stopping.is_set():
            try:
                while await self.queue.deliver_terminal(self.worker_id, lease=self.lease_seconds):
                    pass
            except Exception:
                log.exception("worker %s: delivering terminal hooks failed", self.worker_id)
            await self._idle()

    async def _idle(self) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        work = asyncio.create_task(self.queue.wait_for_work(self.poll_seconds))
        await asyncio.wait([stop, work], return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, work):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
