"""Durable payment ledger: one authorization, one use; settlement states; idempotent replays.

Records live in SQLite (default) or PostgreSQL. A live unique index on (network, asset, payer,
nonce) refuses a second use of an authorization across tasks and processes; an optional lock
backend (e.g. Redis) can refuse it earlier. State changes follow the pure table in
`x402gw._ledger_rules` and are applied as single conditional updates.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from x402gw import _ledger_sql as sql
from x402gw._ledger_plan import Writer
from x402gw._ledger_rules import (
    BLOCKING,
    TERMINAL,
    Event,
    InvalidPaymentData,
    InvalidTransition,
    LedgerError,
    NonceUse,
    ReconcileDecision,
    State,
    TxOutcome,
    authorization_key,
    check_amount,
    check_fingerprint,
    check_payment_identifier,
    check_resource,
    check_valid_before,
    decide_reconcile,
    event_effect,
    next_state,
    normalise_account,
    normalise_nonce,
    normalise_token,
    normalise_tx_hash,
    request_fingerprint,
)
from x402gw._ledger_sqlite import SqliteWriter
from x402gw.locks import AuthorizationLocked, AuthorizationLocks, LockHandle

__all__ = [
    "BLOCKING",
    "DEFAULT_URL",
    "TERMINAL",
    "AuthorizationInUse",
    "ConflictingTxHash",
    "Event",
    "InvalidPaymentData",
    "InvalidTransition",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "NonceUse",
    "PaymentIdentifierConflict",
    "PaymentIdentifierInUse",
    "PaymentRecord",
    "ReconcileSummary",
    "RecordNotFound",
    "Response",
    "State",
    "StoredResponse",
    "TxOutcome",
    "next_state",
    "request_fingerprint",
]

DEFAULT_URL = "sqlite:///x402gw-ledger.sqlite3"
_MIGRATE_ATTEMPTS = 5


class AuthorizationInUse(LedgerError):
    """The authorization already has a live record (or a lock held elsewhere): refuse this use."""

    def __init__(self, key: str, record_id: str | None, state: State | None) -> None:
        where = f"record {record_id} in state {state}" if record_id else "a lock held elsewhere"
        super().__init__(f"authorization {key} is in use by {where}")
        self.key = key
        self.record_id = record_id
        self.state = state


class PaymentIdentifierInUse(LedgerError):
    """A live record holds this payment identifier and has no stored response to replay yet."""

    def __init__(self, payment_identifier: str, record_id: str, state: State) -> None:
        super().__init__(
            f"payment identifier {payment_identifier!r} is in use by record {record_id} ({state})"
        )
        self.payment_identifier = payment_identifier
        self.record_id = record_id
        self.state = state


class PaymentIdentifierConflict(LedgerError):
    """The payment identifier was used for a different request (another fingerprint)."""

    def __init__(self, payment_identifier: str, record_id: str) -> None:
        super().__init__(
            f"payment identifier {payment_identifier!r} belongs to a different request "
            f"(record {record_id})"
        )
        self.payment_identifier = payment_identifier
        self.record_id = record_id


class RecordNotFound(LedgerError, KeyError):
    """No record has this id."""

    def __init__(self, record_id: str) -> None:
        super().__init__(f"no payment record {record_id!r}")
        self.record_id = record_id

    def __str__(self) -> str:
        return str(self.args[0])


class ConflictingTxHash(LedgerError):
    """A different transaction hash is already recorded: one authorization, one transaction."""

    def __init__(self, record_id: str, recorded: str, offered: str) -> None:
        super().__init__(f"record {record_id} already has tx {recorded}, refusing {offered}")
        self.record_id = record_id
        self.recorded = recorded
        self.offered = offered


class LedgerUnavailable(LedgerError):
    """The database could not be reached or refused the operation for a non-data reason."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept for idempotent replay: status, header pairs (repeats allowed), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One verified payment as stored; `amount` is in atomic units."""

    id: str
    scheme: str
    network: str
    asset: str
    payer: str
    pay_to: str
    amount: int
    nonce: str
    valid_before: int
    resource: str
    fingerprint: str
    payment_identifier: str | None
    state: State
    tx_hash: str | None
    block_number: int | None
    error: str | None
    response: StoredResponse | None
    created_at: datetime
    updated_at: datetime
    reconciled_at: datetime | None
    signature_hash: str | None = None

    @property
    def authorization_key(self) -> str:
        """The key naming this record's authorization (also its lock name)."""
        return authorization_key(self.network, self.asset, self.payer, self.nonce)


@dataclass(slots=True)
class ReconcileSummary:
    """Ids of records moved by `reconcile`, left pending, or whose check raised."""

    settled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


TxChecker = Callable[[PaymentRecord], Awaitable[TxOutcome | str]]
AuthorizationChecker = Callable[[PaymentRecord], Awaitable[bool | NonceUse]]
TxFinder = Callable[[PaymentRecord], Awaitable[str | None]]


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite returns naive datetimes; we only ever write UTC


def _record(m: Mapping[Any, Any]) -> PaymentRecord:
    response = None
    if m["response_status"] is not None:
        response = StoredResponse(
            status=m["response_status"],
            headers=tuple((str(k), str(v)) for k, v in m["response_headers"] or ()),
            body=bytes(m["response_body"] or b""),
        )
    created, updated = _utc(m["created_at"]), _utc(m["updated_at"])
    assert created is not None  # NOT NULL column
    assert updated is not None  # NOT NULL column
    return PaymentRecord(
        id=m["id"],
        scheme=m["scheme"],
        network=m["network"],
        asset=m["asset"],
        payer=m["payer"],
        pay_to=m["pay_to"],
        amount=int(m["amount"]),
        nonce=m["nonce"],
        valid_before=m["valid_before"],
        resource=m["resource"],
        fingerprint=m["fingerprint"],
        payment_identifier=m["payment_identifier"],
        state=State(m["state"]),
        tx_hash=m["tx_hash"],
        block_number=m["block_number"],
        error=m["error"],
        response=response,
        created_at=created,
        updated_at=updated,
        reconciled_at=_utc(m["reconciled_at"]),
        signature_hash=m.get("signature_hash"),
    )


def _check_response(
    status: int, headers: Sequence[tuple[str, str]] | Mapping[str, str], body: bytes
) -> tuple[int, list[list[str]], bytes]:
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidPaymentData(f"response status must be 100-599, got {status!r}")
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    clean: list[list[str]] = []
    for pair in pairs:
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(p, str) for p in pair)
        ):
            raise InvalidPaymentData(
                f"response headers must be (name, value) strings, got {pair!r}"
            )
        clean.append([pair[0], pair[1]])
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidPaymentData("response body must be bytes")
    return status, clean, bytes(body)


Response = tuple[int, Sequence[tuple[str, str]] | Mapping[str, str], bytes]
"""A response to keep with a record: status, header pairs, body."""


def _response_values(
    status: int, headers: Sequence[tuple[str, str]] | Mapping[str, str], body: bytes
) -> dict[str, Any]:
    status, pairs, data = _check_response(status, headers, body)
    return {"response_status": status, "response_headers": pairs, "response_body": data}


class Ledger:
    """Payment records in SQLite or PostgreSQL; create with a URL, `await migrate()`, then use.

    `schema` (PostgreSQL) keeps the tables in a schema of their own; `locks` adds a lock backend
    in front of the database; `clock` (unix seconds) is injectable for tests.

    SQLite runs in WAL mode with ``synchronous=NORMAL``: every committed change survives a crash
    of the process (what reconcile-after-restart relies on), but a power loss or OS crash may
    drop the last few commits. Use PostgreSQL (or a battery-backed disk) where that matters.
    """

    def __init__(
        self,
        url: str | Path = DEFAULT_URL,
        *,
        schema: str | None = None,
        locks: AuthorizationLocks | None = None,
        max_lock_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine: AsyncEngine = sql.create_engine(url, schema)
        self._writer: Writer
        if self._engine.dialect.name == "sqlite":
            self._writer = SqliteWriter(self._engine.url.database or "")
        else:
            from x402gw._ledger_pg import PgWriter  # asyncpg is the postgres extra

            self._writer = PgWriter(self._engine.url, schema)
        self._schema = schema
        self._locks = locks
        self._max_lock_seconds = max_lock_seconds
        self._clock = clock
        self._handles: dict[str, LockHandle] = {}

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Dispose of the connection pool and the writer's connection (or pool)."""
        await self._writer.close()
        await self._engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except sa.exc.IntegrityError:
            raise
        except (sa.exc.DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"ledger database error: {exc}") from exc

    async def _returning(
        self, statement: sa.Insert | sa.Update, params: dict[str, Any]
    ) -> Mapping[Any, Any] | None:
        """Run one INSERT/UPDATE ... RETURNING; the row, or None when it matched nothing.

        It goes to the writer, not the engine: on SQLite the dedicated write connection, on
        PostgreSQL an asyncpg pool; one driver call in autocommit (one statement is atomic).
        """
        try:
            return await self._writer.fetch_one(statement, params)
        except sa.exc.IntegrityError:
            raise
        except (sa.exc.DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"ledger database error: {exc}") from exc

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- schema ---------------------------------------------------------------------------------

    async def migrate(self) -> str | None:
        """Apply pending migrations (idempotent); return the revision now in place.

        On SQLite, processes starting together on a new file can still meet a "database is
        locked" that the busy timeout does not cover (while another one switches the file to
        WAL): the migration is then tried again, a few times, since it is idempotent.
        """
        for attempt in range(_MIGRATE_ATTEMPTS):
            try:
                async with self._tx() as conn:
                    await conn.run_sync(sql.upgrade_to_head, self._schema)
                async with self._tx() as conn:
                    return await conn.run_sync(sql.current_revision)
            except LedgerUnavailable as exc:
                retry = self.dialect == "sqlite" and "database is locked" in str(exc)
                if not retry or attempt == _MIGRATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, record_id: str) -> PaymentRecord:
        """One record by id, or :class:`RecordNotFound`."""
        async with self._tx() as conn:
            row = await sql.select_by_id(conn, record_id)
        if row is None:
            raise RecordNotFound(record_id)
        return _record(row._mapping)

    async def find_by_payment_identifier(self, payment_identifier: str) -> PaymentRecord | None:
        """The live (not released) record holding `payment_identifier`, if any."""
        pid = check_payment_identifier(payment_identifier)
        assert pid is not None
        async with self._tx() as conn:
            row = await sql.select_live_by_payment_identifier(conn, pid)
        return None if row is None else _record(row._mapping)

    async def replay(self, payment_identifier: str, fingerprint: str) -> StoredResponse | None:
        """Stored response for a repeated request, or None when this identifier is new.

        Raises :class:`PaymentIdentifierConflict` for the same identifier on another request,
        :class:`PaymentIdentifierInUse` while the first request has no response stored yet.
        """
        fingerprint = check_fingerprint(fingerprint)
        record = await self.find_by_payment_identifier(payment_identifier)
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise PaymentIdentifierConflict(payment_identifier, record.id)
        stored = record.response
        # Content is kept from `settling` on, but released only once the payment settled;
        # a failed payment replays only a stored refusal.
        releasable = record.state is State.SETTLED or (
            record.state is State.FAILED and stored is not None and stored.status >= 400
        )
        if stored is None or not releasable or stored.status == sql.CLAIMED_STATUS:
            raise PaymentIdentifierInUse(payment_identifier, record.id, record.state)
        return stored

    async def find_live_by_authorization(
        self, network: str, asset: str, payer: str, nonce: str
    ) -> PaymentRecord | None:
        """The record currently holding an authorization (not released), if any."""
        async with self._tx() as conn:
            row = await sql.select_live_by_authorization(
                conn,
                normalise_token(network, "network"),
                normalise_account(asset, "asset"),
                normalise_account(payer, "payer"),
                normalise_nonce(nonce),
            )
        return None if row is None else _record(row._mapping)

    async def outstanding(
        self, network: str, asset: str, payer: str, *, settled_since: float
    ) -> tuple[int, int]:
        """``(count, total)`` of ``payer``'s payments on ``asset``: the count of those in flight
        (reserved or settling, not past ``validBefore``) plus those settled since
        ``settled_since`` (unix time), and the in-flight amounts' sum (atomic units).

        One read on the write path's connection, so it sees every committed reservation.
        """
        params = sql.outstanding_params(
            normalise_token(network, "network"),
            normalise_account(asset, "asset"),
            normalise_account(payer, "payer"),
            int(self._clock()),
            datetime.fromtimestamp(settled_since, UTC),
        )
        try:
            row = await self._writer.fetch_row(sql.OUTSTANDING, params)
        except (sa.exc.DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"ledger database error: {exc}") from exc
        count, total = row if row is not None else (0, 0)
        if isinstance(total, float) and total >= 2.0**53:  # SQLite's float may have rounded
            async with self._tx() as conn:
                total = sum(await sql.select_outstanding_amounts(conn, params))
        return int(count or 0), int(total or 0)

    async def claim_response(
        self, record_id: str, *, stale_after: float = 3600.0
    ) -> PaymentRecord | None:
        """Take a settled record without a stored response for one handler run; None when
        another run took it first (or it is not settled). Its status reads 102 until
        :meth:`store_response` replaces it; a claim older than ``stale_after`` seconds (its
        process died mid-run) may be taken again."""
        stale = datetime.fromtimestamp(self._clock() - stale_after, UTC)
        params = {"p_id": record_id, "v_updated_at": self._now(), "p_stale": stale}
        row = await self._returning(sql.CLAIM_RESPONSE, params)
        return None if row is None else _record(row)

    async def records(self, state: State | None = None) -> list[PaymentRecord]:
        """Every record (in ``state``, if given), oldest first: for operators and tests."""
        states = list(State) if state is None else [State(state)]
        found: list[PaymentRecord] = []
        async with self._tx() as conn:
            for each in states:
                found += [_record(r._mapping) for r in await sql.select_by_state(conn, each)]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    async def pending_settlements(self) -> list[PaymentRecord]:
        """Records in `settling`, with or without a tx hash (what a restart must reconcile)."""
        async with self._tx() as conn:
            rows = await sql.select_by_state(conn, State.SETTLING)
        return [_record(r._mapping) for r in rows]

    # --- reserve --------------------------------------------------------------------------------

    async def reserve(
        self,
        *,
        scheme: str,
        network: str,
        asset: str,
        payer: str,
        pay_to: str,
        amount: int,
        nonce: str,
        valid_before: int,
        resource: str,
        fingerprint: str,
        payment_identifier: str | None = None,
        signature_hash: str | None = None,
    ) -> PaymentRecord:
        """Create the record in `verified`, or raise :class:`AuthorizationInUse`.

        `signature_hash` (hex SHA-256 of the signature bytes) lets a repeat of the same signed
        payment be recognised later without the chain.

        Also raises :class:`PaymentIdentifierInUse` when a live record already holds the
        payment identifier (call `replay` first), and :class:`InvalidPaymentData` for bad fields.
        """
        now = self._now()
        values: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "scheme": normalise_token(scheme, "scheme"),
            "network": normalise_token(network, "network"),
            "asset": normalise_account(asset, "asset"),
            "payer": normalise_account(payer, "payer"),
            "pay_to": normalise_account(pay_to, "pay_to"),
            "amount": check_amount(amount),
            "nonce": normalise_nonce(nonce),
            "valid_before": check_valid_before(valid_before),
            "resource": check_resource(resource),
            "fingerprint": check_fingerprint(fingerprint),
            "payment_identifier": check_payment_identifier(payment_identifier),
            "signature_hash": check_fingerprint(signature_hash) if signature_hash else None,
            "state": State.VERIFIED.value,
            "created_at": now,
            "updated_at": now,
        }
        key = authorization_key(network, asset, payer, nonce)
        handle = await self._lock(key, values["valid_before"])
        try:
            statement, params = sql.insert_query(values)
            row = await self._returning(statement, params)
        except sa.exc.IntegrityError:
            if handle is not None:
                await self._locks_release(handle)
            await self._raise_duplicate(key, values)
            # The conflicting row was released in between; refusing is the safe answer.
            raise AuthorizationInUse(key, None, None) from None
        except BaseException:
            if handle is not None:
                await self._locks_release(handle)
            raise
        if handle is not None:
            self._handles[values["id"]] = handle
        assert row is not None  # an INSERT ... RETURNING returns its row
        return _record(row)

    async def _lock(self, key: str, valid_before: int) -> LockHandle | None:
        if self._locks is None:
            return None
        ttl = min(max(valid_before - self._clock(), 1.0), self._max_lock_seconds)
        try:
            return await self._locks.acquire(key, ttl)
        except AuthorizationLocked:
            raise AuthorizationInUse(key, None, None) from None

    async def _locks_release(self, handle: LockHandle) -> None:
        assert self._locks is not None
        await self._locks.release(handle)

    async def _raise_duplicate(self, key: str, values: dict[str, Any]) -> None:
        async with self._tx() as conn:
            row = await sql.select_live_by_authorization(
                conn, values["network"], values["asset"], values["payer"], values["nonce"]
            )
            if row is not None:
                raise AuthorizationInUse(key, row.id, State(row.state))
            pid = values["payment_identifier"]
            if pid is not None:
                row = await sql.select_live_by_payment_identifier(conn, pid)
                if row is not None:
                    raise PaymentIdentifierInUse(pid, row.id, State(row.state))

    # --- transitions ----------------------------------------------------------------------------

    async def _apply(
        self,
        record_id: str,
        event: Event,
        values: dict[str, Any] | None = None,
        *,
        tx_hash: str | None = None,
    ) -> PaymentRecord:
        # One conditional UPDATE ... RETURNING; only when it matches nothing is the record read,
        # to say why. States only move forward and a hash is set once, so the retry loop ends.
        sources, target = event_effect(event)
        from_states = sorted(sources)
        while True:
            update = dict(values or {})
            update["updated_at"] = self._now()
            if target is not None:
                update["state"] = target.value
            if tx_hash is not None:
                update["tx_hash"] = tx_hash
            statement, params = sql.transition_query(
                record_id, from_states=from_states, tx_hash=tx_hash, values=update
            )
            row = await self._returning(statement, params)
            if row is None:
                record = await self.get(record_id)
                next_state(record.state, event)
                if tx_hash is not None and record.tx_hash not in (None, tx_hash):
                    raise ConflictingTxHash(record_id, record.tx_hash or "", tx_hash)
                continue  # it moved between the update and the read; try again
            record = _record(row)
            if record.state in TERMINAL:
                await self._drop_lock(record_id)
            return record

    async def _drop_lock(self, record_id: str) -> None:
        handle = self._handles.pop(record_id, None)
        if handle is not None:
            await self._locks_release(handle)

    async def mark_settling(
        self, record_id: str, tx_hash: str | None = None, *, response: Response | None = None
    ) -> PaymentRecord:
        """`verified` → `settling`: settlement is about to be requested; `response` (the
        content being paid for) is kept in the same write, for whoever finds it settled."""
        tx = None if tx_hash is None else normalise_tx_hash(tx_hash)
        values = None if response is None else _response_values(*response)
        return await self._apply(record_id, Event.SETTLE, values, tx_hash=tx)

    async def record_broadcast(
        self, record_id: str, tx_hash: str, *, response: Response | None = None
    ) -> PaymentRecord:
        """Persist the transaction hash before waiting for its receipt (and, for a settlement
        still pending, the response to release once it is confirmed)."""
        values = None if response is None else _response_values(*response)
        return await self._apply(
            record_id, Event.BROADCAST, values, tx_hash=normalise_tx_hash(tx_hash)
        )

    async def mark_settled(
        self,
        record_id: str,
        tx_hash: str,
        block: int | None = None,
        *,
        response: Response | None = None,
    ) -> PaymentRecord:
        """`settling` → `settled` with the mined transaction; `response` (status, headers,
        body) is kept in the same write for replays."""
        if block is not None and (
            isinstance(block, bool) or not isinstance(block, int) or block < 0
        ):
            raise InvalidPaymentData(f"block must be a non-negative int, got {block!r}")
        values: dict[str, Any] = {"block_number": block}
        if response is not None:
            values.update(_response_values(*response))
        return await self._apply(
            record_id, Event.SETTLED, values, tx_hash=normalise_tx_hash(tx_hash)
        )

    async def mark_failed(self, record_id: str, error: str) -> PaymentRecord:
        """→ `failed`: the authorization stays blocked; `error` says why."""
        if not isinstance(error, str) or not error:
            raise InvalidPaymentData("error must be a non-empty string")
        return await self._apply(record_id, Event.FAIL, {"error": error})

    async def release(self, record_id: str) -> PaymentRecord:
        """`verified` → `released`: nothing was broadcast, the authorization may be retried."""
        return await self._apply(record_id, Event.RELEASE)

    async def store_response(
        self,
        record_id: str,
        status: int,
        headers: Sequence[tuple[str, str]] | Mapping[str, str],
        body: bytes,
    ) -> PaymentRecord:
        """Keep the response sent for this payment so a retry with its identifier replays it."""
        return await self._apply(
            record_id, Event.STORE_RESPONSE, _response_values(status, headers, body)
        )

    async def release_stale(self, older_than_seconds: float) -> list[str]:
        """Release `verified` records untouched for `older_than_seconds`; return their ids.

        For restarts: a process that died while running a handler never broadcast anything, so
        its authorizations may be tried again. Choose a bound longer than any handler runs.
        """
        if (
            isinstance(older_than_seconds, bool)
            or not isinstance(older_than_seconds, int | float)
            or not 0 <= older_than_seconds < float("inf")
        ):
            raise InvalidPaymentData(f"older_than_seconds must be >= 0, got {older_than_seconds!r}")
        cutoff = datetime.fromtimestamp(self._clock() - older_than_seconds, UTC)
        async with self._tx() as conn:
            rows = await sql.select_by_state(conn, State.VERIFIED, updated_before=cutoff)
        released = []
        for row in rows:
            try:
                await self.release(row.id)
            except InvalidTransition:  # its handler finished in the meantime
                continue
            released.append(row.id)
        return released

    # --- reconcile ------------------------------------------------------------------------------

    async def reconcile(
        self,
        check_tx: TxChecker,
        authorization_used: AuthorizationChecker | None = None,
        find_tx: TxFinder | None = None,
        *,
        chain_time: float | None = None,
    ) -> ReconcileSummary:
        """Settle or fail every `settling` record from chain facts; never broadcasts anything.

        `chain_time` (the latest block's timestamp) decides whether an authorization has
        expired: a transaction still waiting in a node's pool can be mined as long as a block's
        timestamp stays below `validBefore`, whatever this machine's clock says (default: it).

        `check_tx(record)` reports the stored `record.tx_hash` as mined_ok / reverted / unknown;
        `authorization_used(record)` reports EIP-3009 `authorizationState(payer, nonce)` on the
        record's network and asset (a :class:`NonceUse` also says whether that use paid this
        record: ``OTHER`` fails it); `find_tx(record)`, asked only for a record settled without a
        stored hash, names the transaction that used the authorization (None if not found). All
        receive the record because a hash or a nonce alone does not say which chain or token to
        ask. A checker that raises leaves its record pending (see `errors`); one that answers
        nonsense raises :class:`InvalidPaymentData`.
        """
        summary = ReconcileSummary()
        for record in await self.pending_settlements():
            found: str | None = None
            try:
                decision = await self._decide(record, check_tx, authorization_used, chain_time)
                if decision.event is Event.SETTLED and record.tx_hash is None and find_tx:
                    found = await find_tx(record)
            except LedgerError:
                raise
            except Exception as exc:  # a checker failure leaves the record for the next run
                summary.errors[record.id] = f"{type(exc).__name__}: {exc}"
                continue
            if decision.event is None:
                summary.pending.append(record.id)
                continue
            extra: dict[str, Any] = {"reconciled_at": self._now()}
            if decision.event is Event.FAIL:
                extra["error"] = f"reconcile: {decision.note}"
            try:
                tx_hash = None if found is None else normalise_tx_hash(found)
                await self._apply(record.id, decision.event, extra, tx_hash=tx_hash)
            except InvalidTransition:  # moved on concurrently (another process finished it)
                summary.pending.append(record.id)
                continue
            (summary.settled if decision.event is Event.SETTLED else summary.failed).append(
                record.id
            )
        return summary

    async def _decide(
        self,
        record: PaymentRecord,
        check_tx: TxChecker,
        authorization_used: AuthorizationChecker | None,
        chain_time: float | None,
    ) -> ReconcileDecision:
        outcome: TxOutcome | None = None
        if record.tx_hash is not None:
            raw = await check_tx(record)
            try:
                outcome = TxOutcome(raw)
            except ValueError:
                raise InvalidPaymentData(f"check_tx returned {raw!r}, not a TxOutcome") from None
        used: bool | NonceUse | None = None
        if outcome is not TxOutcome.MINED_OK and authorization_used is not None:
            answer = await authorization_used(record)
            if not isinstance(answer, bool | NonceUse):
                raise InvalidPaymentData(f"authorization_used returned {answer!r}, not a bool")
            used = answer
        return decide_reconcile(
            has_tx_hash=record.tx_hash is not None,
            outcome=outcome,
            authorization_used=used,
            expired=record.valid_before <= (self._clock() if chain_time is None else chain_time),
        )
