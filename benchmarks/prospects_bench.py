"""Prospect search latency (p50/p95) over a generated pool on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/prospects_bench.py --n 1000000
    .venv/bin/python benchmarks/prospects_bench.py --n 100000 --backends sqlite

Tags follow a Zipf-Mandelbrot law (weight 1/(rank + q)), so a few tags are common and most are
rare. Rows are bulk-loaded (sqlite3 ``executemany`` / asyncpg ``COPY``) into the migrated schema,
then tag weights are computed by the store and queries go through ``ProspectStore.search``.
PostgreSQL runs in a throw-away database that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from server.db import Database
from server.prospects.models import SearchFilters, SearchRequest
from server.prospects.store import ProspectStore

COMPANIES = [f"Company {i}" for i in range(5000)]
TITLES = ["VP Sales", "Head of Growth", "CTO", "Founder", "Sales Engineer", "Marketing Lead"]
CITIES = ["Berlin", "Paris", "London", "New York", "Austin", "Lisbon", "Warsaw", "Tokyo"]
COLUMNS = (
    "id", "name", "title", "company", "domain", "linkedin_url", "email", "location", "tags",
    "company_key", "title_key", "location_key", "created_at",
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One generated prospect."""

    id: int
    company: str
    title: str
    city: str
    tags: list[str]


class TagSampler:
    """Draws tags by Zipf-Mandelbrot weights over a fixed vocabulary."""

    def __init__(self, vocab: int, q: float, rng: random.Random) -> None:
        self.tags = [f"t{i}" for i in range(vocab)]
        self.cum = list(itertools.accumulate(1.0 / (k + 1 + q) for k in range(vocab)))
        self.rng = rng

    def draw(self, k: int) -> list[str]:
        """``k`` distinct tags."""
        out: dict[str, None] = {}
        while len(out) < k:
            x = self.rng.random() * self.cum[-1]
            out[self.tags[bisect.bisect_left(self.cum, x)]] = None
        return list(out)


def generate(n: int, sampler: TagSampler, rng: random.Random) -> Iterator[Row]:
    """``n`` prospects with ids 1..n and 2-8 tags each."""
    for i in range(1, n + 1):
        yield Row(
            i, rng.choice(COMPANIES), rng.choice(TITLES), rng.choice(CITIES),
            sampler.draw(rng.randint(2, 8)),
        )  # fmt: skip


def _values(row: Row, now: datetime) -> tuple[object, ...]:
    domain = row.company.lower().replace(" ", "") + ".example"
    return (
        row.id, f"Person {row.id}", row.title, row.company, domain, None,
        f"p{row.id}@{domain}", row.city, row.tags, row.company.lower(), row.title.lower(),
        row.city.lower(), now,
    )  # fmt: skip


def load_sqlite(path: Path, rows: list[Row]) -> None:
    """executemany into prospects and prospect_tags in one transaction."""
    import json

    now = datetime.now(UTC)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=MEMORY")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    with conn:
        conn.executemany(
            f"INSERT INTO prospects ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            (
                tuple(json.dumps(v) if isinstance(v, list) else v for v in _values(r, now))
                for r in rows
            ),
        )
        conn.executemany(
            "INSERT INTO prospect_tags (tag, prospect_id) VALUES (?, ?)",
            ((t, r.id) for r in rows for t in r.tags),
        )
    conn.close()


async def load_postgres(dsn: str, rows: list[Row]) -> None:
    """COPY into prospects (tags as text[])."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "prospects", records=(_values(r, now) for r in rows), columns=list(COLUMNS)
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('prospects', 'id'), (SELECT max(id) FROM prospects))"
        )
        await conn.execute("ANALYZE prospects")
    finally:
        await conn.close()


def queries(count: int, sampler: TagSampler, rng: random.Random) -> list[SearchRequest]:
    """Mostly plain tag searches; one in four adds a filter, one in five asks for page 2."""
    out = []
    for i in range(count):
        filters = None
        if i % 4 == 1:
            filters = SearchFilters(title=rng.choice(["sales", "cto", "lead"]))
        elif i % 4 == 3:
            filters = SearchFilters(location=rng.choice(CITIES))
        out.append(
            SearchRequest(
                tags=sampler.draw(rng.randint(1, 3)),
                limit=10,
                offset=10 if i % 5 == 4 else 0,
                filters=filters,
            )
        )
    return out


@dataclass
class Result:
    """One backend's figures."""

    backend: str
    n: int
    load_s: float
    stats_s: float
    p50_ms: float
    p95_ms: float
    mean_matches: float


async def measure(
    backend: str, db: Database, load: float, requests: list[SearchRequest], n: int
) -> Result:
    """Refresh tag weights, warm up, then time every query."""
    store = ProspectStore(db)
    t0 = time.perf_counter()
    await store.refresh()
    stats_s = time.perf_counter() - t0
    for request in requests[:5]:
        await store.search(request)
    timings, matches = [], []
    for request in requests:
        t = time.perf_counter()
        page = await store.search(request)
        timings.append((time.perf_counter() - t) * 1000)
        matches.append(page.total)
    q = statistics.quantiles(timings, n=20)
    return Result(
        backend, n, load, stats_s, statistics.median(timings), q[18], statistics.fmean(matches)
    )


async def run_sqlite(rows: list[Row], requests: list[SearchRequest]) -> Result:
    """Migrate a temporary SQLite file, bulk-load, measure."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite3"
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
            await db.dispose()
            t = time.perf_counter()
            load_sqlite(path, rows)
            load = time.perf_counter() - t
            return await measure("sqlite", db, load, requests, len(rows))
        finally:
            await db.dispose()


async def run_postgres(admin: str, rows: list[Row], requests: list[SearchRequest]) -> Result:
    """Create a throw-away database, migrate, COPY, measure, drop."""
    name = "bavlio_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    db = Database(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        await db.migrate()
        t = time.perf_counter()
        await load_postgres(dsn, rows)
        load = time.perf_counter() - t
        return await measure("postgresql", db, load, requests, len(rows))
    finally:
        await db.dispose()
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def table(results: list[Result]) -> str:
    """The figures as a plain-text table."""
    head = f"{'backend':<11} {'n':>9} {'load s':>8} {'weights s':>9} {'p50 ms':>8} {'p95 ms':>8} {'avg matches':>12}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.backend:<11} {r.n:>9} {r.load_s:>8.1f} {r.stats_s:>9.2f} {r.p50_ms:>8.2f}"
            f" {r.p95_ms:>8.2f} {r.mean_matches:>12.0f}"
        )
    return "\n".join(lines)


async def main() -> None:
    """Parse arguments, generate the pool once, run each backend."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="prospects (default 1M)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--vocab", type=int, default=20_000, help="distinct tags")
    parser.add_argument("--zipf-q", type=float, default=50.0, help="flattening of the head")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sampler = TagSampler(args.vocab, args.zipf_q, rng)
    t = time.perf_counter()
    rows = list(generate(args.n, sampler, rng))
    print(f"generated {args.n} prospects in {time.perf_counter() - t:.1f}s", flush=True)
    requests = queries(args.queries, sampler, rng)
    results = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            results.append(await run_sqlite(rows, requests))
        elif backend == "postgresql":
            results.append(await run_postgres(args.pg, rows, requests))
        else:
            parser.error(f"unknown backend {backend!r}")
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
