"""A fresh database per benchmark run: a SQLite file in the run's folder, or a PostgreSQL
database created beside ``BAVLIO_BENCH_PG``'s and dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN = os.environ.get("BAVLIO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def fresh_database(backend: str, work: Path, prefix: str) -> Iterator[tuple[str, str | None]]:
    """(URL, schema) of a new database for ``backend``; ``prefix`` names PostgreSQL's."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{work / ('bench-' + secrets.token_hex(4) + '.sqlite3')}", None
        return
    import psycopg

    name = f"bavlio_{prefix}_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        yield url.replace("postgresql://", "postgresql+asyncpg://"), None
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
