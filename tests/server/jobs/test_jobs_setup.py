"""Wiring from settings: the embedded worker ``bavlio serve`` runs on SQLite, and a default
``bavlio worker`` (no kinds yet) that starts, says so and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from jobs_support import (  # noqa: F401 (fixtures)
    db_fixture,
    db_url_fixture,
    eventually,
)

from server.db.engine import Database
from server.jobs import JobState
from server.jobs.setup import build_queue, build_worker, embedded
from server.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


async def test_an_embedded_worker_runs_the_configured_kinds(
    db: Database, db_url: tuple[str, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBS_TEST_DIR", str(tmp_path))
    settings = load_settings(
        env_file=None,
        database_url=db_url[0],
        database_schema=db_url[1],
        job_handlers="jobs_crash_handlers:register",
        job_poll_seconds=0.02,
    )
    assert embedded(settings) is db_url[0].startswith("sqlite")
    queue = build_queue(db, settings)
    assert queue.kinds == ("crash.rows",)
    job = await queue.enqueue("alice", "crash.rows", {}, [1, 2, 3])

    async def succeeded() -> bool:
        current = await queue.get("alice", job.id)
        return current is not None and current.state is JobState.SUCCEEDED

    async with build_worker(queue, settings):
        await eventually(succeeded, "the embedded worker ran the job")
        await eventually(lambda: _exists(tmp_path / "hooks"), "the terminal hook returned")
    assert (tmp_path / "hooks").read_text().split()[:2] == [job.id, "succeeded"]


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


def test_the_default_worker_runs_every_kind_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAVLIO_")}
    env.update(
        BAVLIO_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'w.sqlite3'}",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "worker", "--concurrency", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("bavlio worker ")
    assert line.rstrip().endswith(
        ": running email.find, email.verify, email.bulk_find, email.bulk_verify, "
        "email.dataset_verify, leads.batch, session.process"
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "no job kinds registered" not in err
    assert (tmp_path / "w.sqlite3").exists()  # migrated at start
