"""``bavlio worker``: migrate, register the configured job kinds, run a :class:`Worker` until
SIGTERM or SIGINT (then stop gracefully: running jobs finish or are given back)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from server.db.engine import Database
from server.jobs.queue import JobQueue
from server.jobs.worker import Worker
from server.settings import Settings

__all__ = ["WorkerSetupError", "load_registrars", "run_worker"]

log = logging.getLogger("server.jobs")


class WorkerSetupError(ValueError):
    """A ``module:function`` in ``BAVLIO_JOB_HANDLERS`` that cannot be loaded."""


def load_registrars(spec: str) -> list[Callable[[JobQueue, Settings], Any]]:
    """Import each ``module:function`` of the comma-separated ``spec``."""
    found = []
    for entry in (part.strip() for part in spec.split(",")):
        module_name, sep, attribute = entry.partition(":")
        if not sep or not module_name or not attribute.isidentifier():
            raise WorkerSetupError(f"job handlers must be module:function, got {entry!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise WorkerSetupError(f"cannot import {module_name!r}: {exc}") from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise WorkerSetupError(f"{module_name!r} has no function {attribute!r}")
        found.append(function)
    return found


async def run_worker(settings: Settings) -> None:
    """Run a worker on the configured database until a stop signal."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    registrars = load_registrars(settings.job_handlers)
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        await db.migrate()
        queue = JobQueue(db)
        for registrar in registrars:
            registrar(queue, settings)
        worker = Worker(
            queue,
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.job_lease_seconds,
            poll_seconds=settings.job_poll_seconds,
            grace_seconds=settings.job_lease_seconds,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        if not queue.kinds:
            log.warning(
                "no job kinds are registered (%s): this worker runs nothing", settings.job_handlers
            )
        print(
            f"bavlio worker {worker.worker_id}: running {', '.join(queue.kinds) or 'nothing'}",
            flush=True,
        )
        await worker.run()
    finally:
        await db.dispose()
