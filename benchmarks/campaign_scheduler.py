"""Campaign sequencer benchmark: a 10,000-lead, 3-step campaign on SQLite and on PostgreSQL,
with an injected clock (the delays between steps cost no wall time).

Two figures per backend:
- ``queue``: every (lead, step) rendered, built, DKIM-signed and claimed-and-queued into the
  outbox (one transaction each, as in production): messages handed to the outbox per second,
  and decisions per second (a decision = one due lead examined);
- ``decide``: the same leads due but every mailbox inside its minimum gap, so each tick only
  decides (reads, suppression check, alias and schedule rules) and sends nothing: the
  scheduler's own overhead, in decisions per second.

Run: ``.venv/bin/python -m benchmarks.campaign_scheduler [--leads 10000 --backends sqlite]``.
PostgreSQL is reached through ``BAVLIO_BENCH_PG`` (a database is created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent / "tests" / "server"
sys.path[:0] = [str(_TESTS), str(_TESTS / "campaigns")]  # the test factories and identities

from factory import StepSpec, make_user  # noqa: E402
from sequencer_support import Clock, launched, make_aliases, sequencer  # noqa: E402

from benchmarks._databases import fresh_database  # noqa: E402
from server.db.engine import Database  # noqa: E402

STEPS = (
    StepSpec(0, ({"label": "A", "weight": 1, "subject": "Hi {{name}}", "text": "One {{name}}"},)),
    StepSpec(
        86400,
        (
            {"label": "A", "weight": 1, "subject": "Again", "text": "Two"},
            {"label": "B", "weight": 1, "subject": "Again", "text": "Two, B"},
        ),
    ),
    StepSpec(86400, ({"label": "A", "weight": 1, "subject": "Last", "text": "Three"},)),
)


@dataclass(frozen=True)
class Result:
    """One run's counts and wall time."""

    backend: str
    name: str
    decisions: int
    queued: int
    seconds: float

    def line(self) -> str:
        """A printable summary."""
        d = self.decisions / self.seconds if self.seconds else 0.0
        q = self.queued / self.seconds if self.seconds else 0.0
        return (
            f"{self.backend:<10} {self.name:<7} decisions {self.decisions:>6} "
            f"queued {self.queued:>6} in {self.seconds:7.2f} s: "
            f"{d:8.0f} decisions/s {q:8.0f} messages to the outbox/s"
        )


def database(backend: str, work: Path) -> contextlib.AbstractContextManager[tuple[str, str | None]]:
    """A fresh database URL for ``backend`` (a PostgreSQL database is dropped afterwards)."""
    return fresh_database(backend, work, "campaign")


async def _campaign(db: Database, clock: Clock, leads: int, schedule: dict[str, object]) -> None:
    user = await make_user(db)
    aliases = await make_aliases(db, user, locals_=("a", "b", "c", "d"))
    await launched(
        db,
        clock,
        user,
        aliases=aliases,
        steps=STEPS,
        leads=[{"email": f"lead{i}@dest.test", "name": f"Lead {i}"} for i in range(leads)],
        schedule=schedule,
    )


async def run(backend: str, url: str, schema: str | None, leads: int, batch: int) -> list[Result]:
    """Both measurements on one fresh database."""
    db = Database(url, schema=schema)
    await db.migrate()
    out = []
    try:
        clock = Clock()
        await _campaign(db, clock, leads, {"timezone": "UTC"})
        seq = sequencer(db, clock, batch=batch)
        decisions = queued = 0
        started = time.perf_counter()
        for k in range(len(STEPS)):
            while True:
                report = await seq.tick()
                decisions += report.decisions
                queued += report.queued
                if report.queued == 0:
                    break
            took = time.perf_counter() - started
            print(f"{backend:<10} step {k}: {queued} queued so far, {took:.1f} s", flush=True)
            clock.advance(86400)
        out.append(Result(backend, "queue", decisions, queued, time.perf_counter() - started))
        if queued != leads * len(STEPS):
            raise SystemExit(f"queued {queued}, expected {leads * len(STEPS)}")

        # Decide only: a second campaign on the same aliases' user, every mailbox in its gap.
        gap = {"timezone": "UTC", "min_gap_seconds": 7 * 86400}
        clock = Clock(clock.now + 86400)
        await _campaign(db, clock, leads, gap)
        seq = sequencer(db, clock, batch=leads)
        await seq.tick()  # one send per mailbox: now every mailbox waits a week
        started = time.perf_counter()
        decisions = queued = 0
        for _ in range(3):
            report = await seq.tick()
            decisions += report.decisions
            queued += report.queued
        out.append(Result(backend, "decide", decisions, queued, time.perf_counter() - started))
    finally:
        await db.dispose()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run each backend, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="due leads read per tick")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    args = parser.parse_args(argv)
    print(f"campaign sequencer: {args.leads} leads x {len(STEPS)} steps, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            with database(backend, Path(tmp)) as (url, schema):
                for result in asyncio.run(run(backend, url, schema, args.leads, args.batch)):
                    print(result.line(), flush=True)


if __name__ == "__main__":
    main()
