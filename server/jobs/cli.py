"""``bavlio worker``: migrate, register the configured job kinds, run a :class:`Worker` until
SIGTERM or SIGINT (then stop gracefully: running jobs finish or are given back)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from server.db.engine import Database
from server.jobs.setup import WorkerSetupError, build_queue, build_worker, load_registrars
from server.settings import Settings

__all__ = ["WorkerSetupError", "run_worker"]

log = logging.getLogger("server.jobs")


async def run_worker(settings: Settings) -> None:
    """Run a worker on the configured database until a stop signal."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    load_registrars(settings.job_handlers)  # a bad setting fails before the database is touched
    db = Database.from_settings(settings)
    try:
        await db.migrate()
        queue = build_queue(db, settings)
        worker = build_worker(queue, settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        if not queue.kinds:
            log.warning(
                "no job kinds registered by %s: this worker runs nothing", settings.job_handlers
            )
        names = ", ".join(queue.kinds) or "nothing"
        print(f"bavlio worker {worker.worker_id}: running {names}", flush=True)
        await worker.run()
    finally:
        await db.dispose()
