"""The payment ledger: one authorization, one use; settlement states; idempotent replays.

Records live in a :class:`~x402gw.ledger.store.Store`: SQLite (default) or PostgreSQL, where a
live unique index on (network, asset, payer, nonce) refuses a second use of an authorization
across tasks and processes, or memory (:class:`~x402gw.ledger.memory.MemoryStore`, for tests). An
optional lock backend (e.g. Redis) can refuse it earlier. State changes follow the pure table in
:mod:`x402gw.ledger.rules` and are applied as single conditional updates.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

# As a module: x402gw.locks imports x402gw.ledger.rules, so either package may load first.
import x402gw.locks as _locks
from x402gw.ledger.records import (
    AuthorizationInUse,
    ConflictingTxHash,
    PaymentIdentifierConflict,
    PaymentIdentifierInUse,
    PaymentRecord,
    ReconcileSummary,
    RecordNotFound,
    Response,
    StoredResponse,
    response_values,
)
from x402gw.ledger.rules import (
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
    replayable,
)
from x402gw.ledger.store import Store, UniqueViolation

if TYPE_CHECKING:
    from x402gw.locks import AuthorizationLocks, LockHandle

DEFAULT_URL = "sqlite:///x402gw-ledger.sqlite3"

TxChecker = Callable[[PaymentRecord], Awaitable[TxOutcome | str]]
AuthorizationChecker = Callable[[PaymentRecord], Awaitable[bool | NonceUse]]
TxFinder = Callable[[PaymentRecord], Awaitable[str | None]]


def _sql_store(url: str | Path, schema: str | None) -> Store:
    from x402gw.ledger._sql import SqlStore  # SQLAlchemy and the drivers, only when used

    return SqlStore(url, schema)


class Ledger:
    """Payment records in SQLite or PostgreSQL; create with a URL, `await migrate()`, then use.

    `url` may also be a :class:`~x402gw.ledger.store.Store`, such as a
    :class:`~x402gw.ledger.memory.MemoryStore` for tests (not durable). `schema` (PostgreSQL)
    keeps the tables in a schema of their own; `locks` adds a lock backend in front of the
    database; `clock` (unix seconds) is injectable for tests.

    SQLite runs in WAL mode with ``synchronous=NORMAL``: every committed change survives a crash
    of the process (what reconcile-after-restart relies on), but a power loss or OS crash may
    drop the last few commits. Use PostgreSQL (or a battery-backed disk) where that matters.
    """

    def __init__(
        self,
        url: str | Path | Store = DEFAULT_URL,
        *,
        schema: str | None = None,
        locks: AuthorizationLocks | None = None,
        max_lock_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(url, Store):
            if schema is not None:
                raise InvalidPaymentData("a schema can only be chosen with a PostgreSQL URL")
            self._store = url
        else:
            self._store = _sql_store(url, schema)
        self._locks = locks
        self._max_lock_seconds = max_lock_seconds
        self._clock = clock
        self._handles: dict[str, LockHandle] = {}

    @property
    def dialect(self) -> str:
        """`sqlite`, `postgresql` or `memory`."""
        return self._store.name

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the store's connections (the next use opens them again)."""
        await self._store.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- schema ---------------------------------------------------------------------------------

    async def migrate(self) -> str | None:
        """Apply pending migrations (idempotent); return the revision now in place (None for a
        store without a schema)."""
        return await self._store.migrate()

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, record_id: str) -> PaymentRecord:
        """One record by id, or :class:`RecordNotFound`."""
        record = await self._store.get(record_id)
        if record is None:
            raise RecordNotFound(record_id)
        return record

    async def find_by_payment_identifier(self, payment_identifier: str) -> PaymentRecord | None:
        """The live (not released) record holding `payment_identifier`, if any."""
        pid = check_payment_identifier(payment_identifier)
        assert pid is not None
        return await self._store.live_by_payment_identifier(pid)

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
        if stored is None or not replayable(record.state, stored.status):
            raise PaymentIdentifierInUse(payment_identifier, record.id, record.state)
        return stored

    async def find_live_by_authorization(
        self, network: str, asset: str, payer: str, nonce: str
    ) -> PaymentRecord | None:
        """The record currently holding an authorization (not released), if any."""
        return await self._store.live_by_authorization(
            normalise_token(network, "network"),
            normalise_account(asset, "asset"),
            normalise_account(payer, "payer"),
            normalise_nonce(nonce),
        )

    async def outstanding(
        self, network: str, asset: str, payer: str, *, settled_since: float
    ) -> tuple[int, int]:
        """``(count, total)`` of ``payer``'s payments on ``asset``: the count of those in flight
        (reserved or settling, not past ``validBefore``) plus those settled since
        ``settled_since`` (unix time), and the in-flight amounts' sum (atomic units).

        One read on the write path, so it sees every committed reservation.
        """
        return await self._store.outstanding(
            normalise_token(network, "network"),
            normalise_account(asset, "asset"),
            normalise_account(payer, "payer"),
            now=int(self._clock()),
            settled_since=datetime.fromtimestamp(settled_since, UTC),
        )

    async def claim_response(
        self, record_id: str, *, stale_after: float = 3600.0
    ) -> PaymentRecord | None:
        """Take a settled record without a stored response for one handler run; None when
        another run took it first (or it is not settled). Its status reads 102 until
        :meth:`store_response` replaces it; a claim older than ``stale_after`` seconds (its
        process died mid-run) may be taken again."""
        stale = datetime.fromtimestamp(self._clock() - stale_after, UTC)
        return await self._store.claim(record_id, now=self._now(), stale_before=stale)

    async def records(self, state: State | None = None) -> list[PaymentRecord]:
        """Every record (only those in ``state``, if given), oldest first: for operators and
        tests, which read records through this instead of the store."""
        return await self._store.select(None if state is None else State(state))

    async def pending_settlements(self) -> list[PaymentRecord]:
        """Records in `settling`, with or without a tx hash (what a restart must reconcile)."""
        return await self._store.select(State.SETTLING)

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
            record = await self._store.insert(values)
        except UniqueViolation:
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
        return record

    async def _lock(self, key: str, valid_before: int) -> LockHandle | None:
        if self._locks is None:
            return None
        ttl = min(max(valid_before - self._clock(), 1.0), self._max_lock_seconds)
        try:
            return await self._locks.acquire(key, ttl)
        except _locks.AuthorizationLocked:
            raise AuthorizationInUse(key, None, None) from None

    async def _locks_release(self, handle: LockHandle) -> None:
        assert self._locks is not None
        await self._locks.release(handle)

    async def _raise_duplicate(self, key: str, values: dict[str, Any]) -> None:
        holder = await self._store.live_by_authorization(
            values["network"], values["asset"], values["payer"], values["nonce"]
        )
        if holder is not None:
            raise AuthorizationInUse(key, holder.id, holder.state)
        pid = values["payment_identifier"]
        if pid is not None:
            holder = await self._store.live_by_payment_identifier(pid)
            if holder is not None:
                raise PaymentIdentifierInUse(pid, holder.id, holder.state)

    # --- transitions ----------------------------------------------------------------------------

    async def _apply(
        self,
        record_id: str,
        event: Event,
        values: dict[str, Any] | None = None,
        *,
        tx_hash: str | None = None,
    ) -> PaymentRecord:
        # One conditional update (rules.transition_applies); only when it matches nothing is the
        # record read, to say why. States only move forward and a hash is set once, so the retry
        # loop ends.
        sources, target = event_effect(event)
        from_states = sorted(sources)
        while True:
            update = dict(values or {})
            update["updated_at"] = self._now()
            if target is not None:
                update["state"] = target.value
            if tx_hash is not None:
                update["tx_hash"] = tx_hash
            moved = await self._store.transition(
                record_id, sources=from_states, tx_hash=tx_hash, values=update
            )
            if moved is None:
                record = await self.get(record_id)
                next_state(record.state, event)
                if tx_hash is not None and record.tx_hash not in (None, tx_hash):
                    raise ConflictingTxHash(record_id, record.tx_hash or "", tx_hash)
                continue  # it moved between the update and the read; try again
            record = moved
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
        values = None if response is None else response_values(*response)
        return await self._apply(record_id, Event.SETTLE, values, tx_hash=tx)

    async def record_broadcast(
        self, record_id: str, tx_hash: str, *, response: Response | None = None
    ) -> PaymentRecord:
        """Persist the transaction hash before waiting for its receipt (and, for a settlement
        still pending, the response to release once it is confirmed)."""
        values = None if response is None else response_values(*response)
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
            values.update(response_values(*response))
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
            record_id, Event.STORE_RESPONSE, response_values(status, headers, body)
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
        released = []
        for record in await self._store.select(State.VERIFIED, updated_before=cutoff):
            try:
                await self.release(record.id)
            except InvalidTransition:  # its handler finished in the meantime
                continue
            released.append(record.id)
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
