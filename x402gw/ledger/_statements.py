"""All SQL of the payment ledger, as SQLAlchemy Core, for SQLite (aiosqlite) and PostgreSQL (asyncpg).

The schema here is what the Alembic migrations build; the queries are the only ones the ledger
runs, built from the predicates of :mod:`x402gw.ledger.rules` (the in-memory store calls those
predicates directly).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from x402gw.ledger.records import COLUMNS, check_columns
from x402gw.ledger.rules import CLAIMED_STATUS, IN_FLIGHT, InvalidPaymentData, State

TABLE = "x402gw_payments"
VERSION_TABLE = "x402gw_alembic_version"
LIVE = sa.text("state <> 'released'")
# pg_advisory_xact_lock key, so concurrent migrate() calls queue instead of racing.
_PG_MIGRATION_LOCK = 0x78343032_67770001
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")

metadata = sa.MetaData()

payments = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("scheme", sa.String(200), nullable=False),
    sa.Column("network", sa.String(200), nullable=False),
    sa.Column("asset", sa.String(200), nullable=False),
    sa.Column("payer", sa.String(200), nullable=False),
    sa.Column("pay_to", sa.String(200), nullable=False),
    sa.Column("amount", sa.String(78), nullable=False),
    sa.Column("nonce", sa.String(66), nullable=False),
    sa.Column("valid_before", sa.BigInteger, nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("payment_identifier", sa.String(200), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tx_hash", sa.String(66), nullable=True),
    sa.Column("block_number", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_headers", sa.JSON, nullable=True),
    sa.Column("response_body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("signature_hash", sa.String(64), nullable=True),
    sa.CheckConstraint(
        "state IN ('verified', 'settling', 'settled', 'failed', 'released')",
        name="ck_x402gw_payments_state",
    ),
    sa.Index(
        "uq_x402gw_payments_live_authorization",
        "network",
        "asset",
        "payer",
        "nonce",
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    ),
    sa.Index(
        "uq_x402gw_payments_live_payment_identifier",
        "payment_identifier",
        unique=True,
        sqlite_where=sa.text("payment_identifier IS NOT NULL AND state <> 'released'"),
        postgresql_where=sa.text("payment_identifier IS NOT NULL AND state <> 'released'"),
    ),
    sa.Index("ix_x402gw_payments_state", "state"),
)

c = payments.c
assert tuple(c.keys()) == COLUMNS, "the table and the records' columns must agree"


# --- engine ------------------------------------------------------------------------------------


def async_url(url: str | Path) -> sa.URL:
    """Map a plain SQLite path or a sqlite/postgresql URL to its asyncio driver."""
    if isinstance(url, Path):
        return sa.URL.create("sqlite+aiosqlite", database=str(url))
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidPaymentData(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
            raise InvalidPaymentData("the ledger must be durable: give SQLite a file path")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise InvalidPaymentData(f"unsupported ledger database {backend!r}: use sqlite or postgresql")


SQLITE_PRAGMAS: Final = (
    # First, so that switching a new file to WAL waits for another process's lock instead of
    # failing at once with "database is locked".
    "PRAGMA busy_timeout=30000",
    "PRAGMA journal_mode=WAL",
    # Under WAL, NORMAL syncs at checkpoints instead of at every commit: a committed transaction
    # survives a process crash (it is in the WAL file), but the last few may be lost on power
    # loss or an OS crash. That is the trade-off for several times fewer fsyncs per payment.
    "PRAGMA synchronous=NORMAL",
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def create_engine(url: str | Path, schema: str | None = None) -> AsyncEngine:
    """An async engine; SQLite gets WAL, synchronous=NORMAL and a busy timeout so writers queue.

    `schema` (PostgreSQL only) puts the ledger tables in their own schema via `search_path`.
    """
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        if schema is not None:
            raise InvalidPaymentData("a schema can only be chosen on PostgreSQL")
        folder = Path(target.database or "").parent
        if not folder.is_dir():  # refuse early: a failed aiosqlite connect leaks its thread
            raise InvalidPaymentData(f"no directory {folder} for the SQLite ledger")
        # One connection per process: SQLite runs one writer at a time anyway, and writers
        # queueing on an asyncio pool wait far less than writers sleeping in SQLite's busy
        # handler. Every use is an `engine.begin()` block that commits or rolls back, so the
        # pool's rollback-on-return would only add a round trip to the driver thread.
        engine = create_async_engine(
            target, pool_size=1, max_overflow=0, pool_timeout=60, pool_reset_on_return=None
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if schema is None:
        return create_async_engine(target, pool_pre_ping=True)
    if not _SCHEMA.fullmatch(schema):
        raise InvalidPaymentData(f"schema must match {_SCHEMA.pattern}, got {schema!r}")
    settings = {"server_settings": {"search_path": schema}}
    return create_async_engine(target, pool_pre_ping=True, connect_args=settings)


# --- migrations --------------------------------------------------------------------------------


def upgrade_to_head(connection: sa.Connection, schema: str | None = None) -> None:
    """Run the Alembic migrations on `connection` (sync side of `AsyncConnection.run_sync`)."""
    from alembic import command
    from alembic.config import Config

    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        if schema is not None:  # validated by create_engine; identifiers cannot be bound
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    else:
        # SQLite: take the write lock before reading the version table, so processes starting
        # together (worker processes on one ledger) migrate one after the other, not both.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def current_revision(connection: sa.Connection) -> str | None:
    """The applied migration revision, or None for an empty database."""
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


# --- queries -----------------------------------------------------------------------------------


# Hot statements are built once per shape and executed with parameters: building SQLAlchemy
# Core constructs costs more CPU than SQLite takes to run them. The SQLite write path
# (`_sqlite`) runs these same statements on the driver directly.
_SELECT_BY_ID = sa.select(payments).where(c.id == sa.bindparam("record_id"))


@functools.lru_cache(maxsize=64)
def _insert_statement(columns: tuple[str, ...]) -> sa.Insert:
    sets = {name: sa.bindparam(f"v_{name}", type_=payments.c[name].type) for name in columns}
    return payments.insert().values(sets).returning(*payments.c)


def insert_query(values: Mapping[str, Any]) -> tuple[sa.Insert, dict[str, Any]]:
    """The INSERT ... RETURNING of one record and its parameters."""
    columns = tuple(sorted(values))
    check_columns(columns)
    return _insert_statement(columns), {f"v_{name}": values[name] for name in columns}


async def select_by_id(conn: AsyncConnection, record_id: str) -> sa.Row[Any] | None:
    """One record by id."""
    result = await conn.execute(_SELECT_BY_ID, {"record_id": record_id})
    return result.first()


async def select_live_by_authorization(
    conn: AsyncConnection, network: str, asset: str, payer: str, nonce: str
) -> sa.Row[Any] | None:
    """The record currently holding an authorization (not released), if any."""
    result = await conn.execute(
        sa.select(payments).where(
            c.network == network,
            c.asset == asset,
            c.payer == payer,
            c.nonce == nonce,
            c.state != State.RELEASED.value,
        )
    )
    return result.first()


async def select_live_by_payment_identifier(
    conn: AsyncConnection, payment_identifier: str
) -> sa.Row[Any] | None:
    """The record currently holding a payment identifier (not released), if any."""
    result = await conn.execute(
        sa.select(payments).where(
            c.payment_identifier == payment_identifier, c.state != State.RELEASED.value
        )
    )
    return result.first()


async def select_by_state(
    conn: AsyncConnection, state: State | None, updated_before: datetime | None = None
) -> Sequence[sa.Row[Any]]:
    """Every record in `state` (any, if None; last changed before `updated_before`, if given),
    oldest first."""
    query = sa.select(payments)
    if state is not None:
        query = query.where(c.state == state.value)
    if updated_before is not None:
        query = query.where(c.updated_at < updated_before)
    result = await conn.execute(query.order_by(c.created_at, c.id))
    return result.all()


_SETTLED: sa.ColumnElement[str] = sa.literal_column(f"'{State.SETTLED.value}'")
_PAYER = (
    c.network == sa.bindparam("p_network", type_=c.network.type),
    c.asset == sa.bindparam("p_asset", type_=c.asset.type),
    c.payer == sa.bindparam("p_payer", type_=c.payer.type),
)
# rules.in_flight: reserved or settling, and still able to move funds (validBefore ahead).
_IN_FLIGHT = sa.and_(
    c.state.in_([sa.literal_column(f"'{s.value}'") for s in State if s in IN_FLIGHT]),
    c.valid_before > sa.bindparam("p_now", type_=c.valid_before.type),
)


class _amount_sum(FunctionElement[Any]):
    """SUM of amounts that cannot fail: PostgreSQL's numeric sum is exact; SQLite's integer
    ``sum()`` raises on 64-bit overflow, so there it is ``total()`` (a float: the caller re-reads
    exactly when the float may have rounded)."""

    inherit_cache = True
    name = "amount_sum"


@compiles(_amount_sum)
def _amount_sum_default(element: _amount_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"coalesce(sum({compiler.process(element.clauses, **kw)}), 0)"


@compiles(_amount_sum, "sqlite")
def _amount_sum_sqlite(element: _amount_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"total({compiler.process(element.clauses, **kw)})"


OUTSTANDING: Final = (
    sa.select(
        sa.func.count(),
        _amount_sum(sa.case((_IN_FLIGHT, sa.cast(c.amount, sa.Numeric(78, 0))), else_=None)),
    )
    .select_from(payments)
    .where(
        *_PAYER,
        LIVE,  # lets SQLite read the payer's rows through the live-authorization index
        sa.or_(
            _IN_FLIGHT,
            sa.and_(
                c.state == _SETTLED,
                c.updated_at >= sa.bindparam("p_since", type_=c.updated_at.type),
            ),
        ),
    )
)
"""(count, in-flight total) of a payer's payments on one asset: rules.counts_outstanding for the
count, rules.in_flight for the total."""


async def select_outstanding_amounts(conn: AsyncConnection, params: dict[str, Any]) -> list[int]:
    """The in-flight amounts of :data:`OUTSTANDING`'s payer, exactly (SQLite sums numbers
    beyond 64 bits as floating point)."""
    query = sa.select(c.amount).where(*_PAYER, _IN_FLIGHT)
    result = await conn.execute(query, {k: v for k, v in params.items() if k != "p_since"})
    return [int(row.amount) for row in result]


def outstanding_params(
    network: str, asset: str, payer: str, now: int, since: datetime
) -> dict[str, Any]:
    """Parameters of :data:`OUTSTANDING`."""
    return {
        "p_network": network,
        "p_asset": asset,
        "p_payer": payer,
        "p_now": now,
        "p_since": since,
    }


CLAIM_RESPONSE: Final = (
    payments.update()
    .where(
        c.id == sa.bindparam("p_id"),
        c.state == _SETTLED,
        sa.or_(
            c.response_status.is_(None),
            sa.and_(
                c.response_status == sa.literal_column(str(CLAIMED_STATUS)),
                c.updated_at < sa.bindparam("p_stale", type_=c.updated_at.type),
            ),
        ),
    )
    .values(
        response_status=sa.literal_column(str(CLAIMED_STATUS)),
        updated_at=sa.bindparam("v_updated_at", type_=c.updated_at.type),
    )
    .returning(*payments.c)
)
"""Mark a rules.claimable record (settled without a response, or whose claim went stale: its
process died) as taken by one handler run (one winner)."""


@functools.lru_cache(maxsize=128)
def _transition_statement(
    from_states: tuple[str, ...], with_hash: bool, columns: tuple[str, ...]
) -> sa.Update:
    # rules.transition_applies. The states are inlined: a closed set of enum values, and an IN
    # list of parameters would be expanded at execution time, which the writers do not do.
    states: list[sa.ColumnElement[str]] = [
        sa.literal_column(f"'{State(s).value}'") for s in from_states
    ]
    query = payments.update().where(c.id == sa.bindparam("p_id"), c.state.in_(states))
    if with_hash:
        query = query.where(sa.or_(c.tx_hash.is_(None), c.tx_hash == sa.bindparam("p_tx_hash")))
    sets = {name: sa.bindparam(f"v_{name}", type_=payments.c[name].type) for name in columns}
    return query.values(sets).returning(*payments.c)


def transition_query(
    record_id: str,
    *,
    from_states: Sequence[State],
    tx_hash: str | None,
    values: Mapping[str, Any],
) -> tuple[sa.Update, dict[str, Any]]:
    """The one-statement conditional transition and its parameters."""
    columns = tuple(sorted(values))
    check_columns(columns)
    statement = _transition_statement(
        tuple(s.value for s in from_states), tx_hash is not None, columns
    )
    params = {f"v_{name}": values[name] for name in columns}
    params["p_id"] = record_id
    if tx_hash is not None:
        params["p_tx_hash"] = tx_hash
    return statement, params
