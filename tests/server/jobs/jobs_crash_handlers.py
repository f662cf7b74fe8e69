"""Job kinds for the crash tests, loaded by a real ``bavlio worker`` process
(``BAVLIO_JOB_HANDLERS=jobs_crash_handlers:register``).

Every side effect is a line appended to a file named by ``JOBS_TEST_DIR``: ``effects`` gets one
line per item handler run, ``hooks`` one line per terminal hook that returned.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from server.jobs import Job, JobContext, JobItem, JobQueue
from server.settings import Settings


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def register(queue: JobQueue, settings: Settings) -> None:
    """``crash.rows``: each item writes a side effect; from row ``payload["hold_from"]`` on it
    then waits while the file ``hold`` exists (so the test kills the worker mid-job); a hook."""
    folder = Path(os.environ["JOBS_TEST_DIR"])

    async def row(ctx: JobContext, item: JobItem) -> Any:
        _append(folder / "effects", f"{ctx.job.id} {item.index} {os.getpid()}")
        hold = ctx.payload.get("hold_from")
        # the test kills this worker while rows wait here (a file: the test is another process)
        while hold is not None and item.index >= hold and (folder / "hold").exists():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.001)
        return {"index": item.index, "pid": os.getpid()}

    async def hook(job: Job) -> None:
        marker = folder / f"hook-started-{job.id}"
        if job.payload.get("hang_in_hook") and not marker.exists():
            marker.touch()
            await asyncio.Event().wait()  # the test kills this process here
        _append(folder / "hooks", f"{job.id} {job.state.value} {os.getpid()}")

    queue.register("crash.rows", item_handler=row, item_concurrency=4)
    queue.on_terminal(hook)
