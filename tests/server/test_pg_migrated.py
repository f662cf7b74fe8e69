"""The shared migrated PostgreSQL schema (tests/server/conftest.py) isolates tests: whatever one
test leaves (rows, changed seed rows, sequence positions) is gone for the next, and one that
changed the structure hands the next test a newly migrated schema."""

from __future__ import annotations

from typing import Any

import psycopg


def _conn(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), autocommit=True)


def test_the_next_test_sees_only_what_the_migrations_left(
    pg_migrated_pool: Any,
) -> None:
    url, schema = pg_migrated_pool.take()
    with _conn(url) as conn:
        before = conn.execute(f"SELECT * FROM {schema}.prospect_pool").fetchall()
        version = conn.execute(f"SELECT version_num FROM {schema}.alembic_version").fetchall()
        conn.execute(f"UPDATE {schema}.prospect_pool SET prospect_count = 99")
        conn.execute(f"UPDATE {schema}.alembic_version SET version_num = 'elsewhere'")
        first = conn.execute(f"SELECT nextval('{schema}.prospects_id_seq')").fetchone()
        conn.execute(f"SELECT nextval('{schema}.prospects_id_seq')")
    again, same = pg_migrated_pool.take()
    assert (again, same) == (url, schema)  # reused, not rebuilt
    with _conn(url) as conn:
        assert conn.execute(f"SELECT * FROM {schema}.prospect_pool").fetchall() == before
        assert (
            conn.execute(f"SELECT version_num FROM {schema}.alembic_version").fetchall() == version
        )
        assert conn.execute(f"SELECT nextval('{schema}.prospects_id_seq')").fetchone() == first


def test_a_changed_structure_gets_a_newly_migrated_schema(
    pg_migrated_pool: Any,
) -> None:
    url, schema = pg_migrated_pool.take()
    with _conn(url) as conn:
        conn.execute(f"ALTER TABLE {schema}.prospect_pool ADD COLUMN extra integer")
    _, fresh = pg_migrated_pool.take()
    assert fresh != schema
    with _conn(url) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'prospect_pool'",
            (fresh,),
        ).fetchall()
    assert ("extra",) not in columns
    assert ("prospect_count",) in columns
