"""A real ``bavlio worker`` killed with SIGKILL mid-job, then restarted, on SQLite and PostgreSQL:
the job completes, every row is completed once, and the terminal hook returns once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jobs_support import db_fixture, db_url_fixture, eventually, state_of  # noqa: F401 (fixtures)

from server.db.engine import Database
from server.jobs import JobContext, JobItem, JobQueue, JobState

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
ROWS = 120
HOLD_FROM = 30
CONCURRENCY = 4  # the item concurrency of crash.rows


def _enqueuer(db: Database) -> JobQueue:
    """A queue in the test process that can enqueue ``crash.rows`` (the worker runs it)."""
    queue = JobQueue(db)

    async def unused(ctx: JobContext, item: JobItem) -> Any:  # pragma: no cover
        raise AssertionError("the test process runs no job")

    queue.register("crash.rows", item_handler=unused)
    return queue


class WorkerProcess:
    """``python -m server worker`` with the crash handlers, against the test database."""

    def __init__(self, db_url: tuple[str, str | None], folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAVLIO_")}
        env.update(
            BAVLIO_DATABASE_URL=db_url[0],
            BAVLIO_JOB_HANDLERS="jobs_crash_handlers:register",
            BAVLIO_JOB_LEASE_SECONDS="1.5",
            BAVLIO_JOB_POLL_SECONDS="0.05",
            BAVLIO_WORKER_CONCURRENCY="2",
            JOBS_TEST_DIR=str(folder),
            PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]),
        )
        if db_url[1] is not None:
            env["BAVLIO_DATABASE_SCHEMA"] = db_url[1]
        self.log = (folder / "worker.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "worker"],
            env=env,
            cwd=folder,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def _done(queue: JobQueue, job_id: str, count: int) -> bool:
    job = await queue.get("alice", job_id)
    return job is not None and job.counts.done >= count


async def _until_file(path: Path, count: int, proc: WorkerProcess) -> None:
    async def enough() -> bool:
        assert proc.proc.poll() is None, (path.parent / "worker.log").read_text()[-3000:]
        return len(_lines(path)) >= count

    await eventually(enough, f"{count} lines in {path.name}", tries=3000)


async def test_a_killed_worker_loses_no_row_and_completes_none_twice(
    db: Database, db_url: tuple[str, str | None], tmp_path: Path
) -> None:
    queue = _enqueuer(db)
    payload = {"hold_from": HOLD_FROM}
    job = await queue.enqueue("alice", "crash.rows", payload, [{"n": i} for i in range(ROWS)])
    (tmp_path / "hold").touch()
    first = WorkerProcess(db_url, tmp_path)
    await _until_file(tmp_path / "effects", HOLD_FROM + CONCURRENCY, first)  # rows wait at hold
    await eventually(lambda: _done(queue, job.id, HOLD_FROM), "the rows before the hold end")
    first.kill()
    (tmp_path / "hold").unlink()
    midway = await queue.get("alice", job.id)
    assert midway is not None
    assert midway.state is JobState.RUNNING
    assert midway.counts.done == HOLD_FROM  # killed mid-job, with CONCURRENCY rows in flight
    second = WorkerProcess(db_url, tmp_path)
    try:
        await eventually(lambda: _terminal(queue, job.id), "the job finishes", tries=3000)
    finally:
        assert second.terminate() == 0  # graceful stop on SIGTERM
    final = await queue.get("alice", job.id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED, final
    assert final.counts.as_json() == {"total": ROWS, "done": ROWS, "failed": 0, "skipped": 0}
    # claimed by the killed worker, then by the second one (once more if a heartbeat came
    # later than the 1.5 s lease on a loaded machine: rows still complete once, below)
    assert final.attempts >= 2
    rows = await queue.items("alice", job.id, limit=1000)
    assert [r.index for r in rows] == list(range(ROWS))
    assert all(r.state.value == "done" and r.result["index"] == r.index for r in rows)
    effects = Counter(int(index) for job_id, index, _ in _lines(tmp_path / "effects"))
    assert set(effects) == set(range(ROWS))  # every row ran
    repeats = sorted(index for index, n in effects.items() if n > 1)
    # in flight at the kill: the worker's two slots share the job (row leases), so 4 to 8 rows
    assert CONCURRENCY <= len(repeats) <= 2 * CONCURRENCY
    assert set(repeats) <= set(range(HOLD_FROM, HOLD_FROM + 2 * CONCURRENCY))
    assert max(effects.values()) == 2
    pids = {int(pid) for _, _, pid in _lines(tmp_path / "effects")}
    assert pids == {first.proc.pid, second.proc.pid}
    both = {r.result["pid"] for r in rows}
    assert both == pids  # results of the killed worker's completed rows were kept
    hooks = _lines(tmp_path / "hooks")
    assert hooks == [[job.id, "succeeded", str(second.proc.pid)]]


async def test_a_worker_killed_inside_the_terminal_hook_delivers_it_after_restart(
    db: Database, db_url: tuple[str, str | None], tmp_path: Path
) -> None:
    queue = _enqueuer(db)
    job = await queue.enqueue("alice", "crash.rows", {"hang_in_hook": True}, [1, 2, 3])
    first = WorkerProcess(db_url, tmp_path)
    marker = tmp_path / f"hook-started-{job.id}"

    async def in_hook() -> bool:
        assert first.proc.poll() is None
        return marker.exists()

    await eventually(in_hook, "the hook started", tries=3000)
    first.kill()
    assert await state_of(queue, "alice", job.id) is JobState.SUCCEEDED
    assert _lines(tmp_path / "hooks") == []
    second = WorkerProcess(db_url, tmp_path)
    try:
        await _until_file(tmp_path / "hooks", 1, second)
        other = await queue.enqueue("alice", "crash.rows", {}, [1])
        await eventually(lambda: _terminal(queue, other.id), "a later job finishes")
        await _until_file(tmp_path / "hooks", 2, second)
    finally:
        assert second.terminate() == 0
    hooks = _lines(tmp_path / "hooks")
    assert sorted(h[0] for h in hooks) == sorted([job.id, other.id])  # once each
    effects = sorted(_lines(tmp_path / "effects"))
    expected = [[job.id, str(i), str(first.proc.pid)] for i in range(3)]
    assert effects == sorted([*expected, [other.id, "0", str(second.proc.pid)]])


async def _terminal(queue: JobQueue, job_id: str) -> bool:
    job = await queue.get("alice", job_id)
    assert job is not None
    return job.terminal


@pytest.mark.parametrize("spec", ["nope", "no_such_module_xyz:register", "server.jobs:missing"])
def test_worker_refuses_bad_handler_specs(
    spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    os.environ.pop("BAVLIO_JOB_HANDLERS", None)
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.sqlite3'}"
    code = main(["worker", "--handlers", spec, "--config", str(_toml(tmp_path, url))])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("bavlio worker: ")
    assert len(err.strip().splitlines()) == 1


def _toml(folder: Path, url: str) -> Path:
    path = folder / "settings.toml"
    path.write_text(f'database_url = "{url}"\n')
    return path


def test_worker_refuses_a_bad_concurrency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    assert main(["worker", "--concurrency", "0"]) == 2
    assert "BAVLIO_WORKER_CONCURRENCY" in capsys.readouterr().err
