"""The interface between :class:`~x402gw.ledger.Ledger` and where its records live.

A store runs the ledger's few primitive operations, each atomic on its own: insert a record
under the live unique keys, apply a conditional transition, claim a settled record, read. The
ledger keeps every decision (validation, the transition table, errors, locks, reconcile); the
stores apply the pure predicates of :mod:`x402gw.ledger.rules` (as SQL statements or in Python),
so the SQLite, PostgreSQL and in-memory stores behave alike and share one test suite.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from x402gw.ledger.records import PaymentRecord
from x402gw.ledger.rules import LedgerError, State

__all__ = ["Store", "UniqueViolation"]


class UniqueViolation(LedgerError):
    """An insert refused by a live unique key: (network, asset, payer, nonce) or the payment
    identifier is held by a live record (or the id exists). The ledger says which."""


class Store(abc.ABC):
    """Where payment records live. Rows are column → value mappings
    (:data:`~x402gw.ledger.records.COLUMNS`); records come back as :class:`PaymentRecord`.

    Failures of the backing database are :class:`~x402gw.ledger.LedgerUnavailable`.
    """

    name: str
    """``sqlite``, ``postgresql`` or ``memory``."""

    @abc.abstractmethod
    async def migrate(self) -> str | None:
        """Bring the schema to the current revision (idempotent); the revision, if any."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections (the next operation opens them again)."""

    @abc.abstractmethod
    async def get(self, record_id: str) -> PaymentRecord | None:
        """One record by id."""

    @abc.abstractmethod
    async def live_by_authorization(
        self, network: str, asset: str, payer: str, nonce: str
    ) -> PaymentRecord | None:
        """The live record (see :func:`~x402gw.ledger.rules.is_live`) holding an authorization."""

    @abc.abstractmethod
    async def live_by_payment_identifier(self, payment_identifier: str) -> PaymentRecord | None:
        """The live record holding a payment identifier."""

    @abc.abstractmethod
    async def select(
        self, state: State | None = None, *, updated_before: datetime | None = None
    ) -> list[PaymentRecord]:
        """Records in ``state`` (every one when None), last changed before ``updated_before``
        when given, oldest first (by creation time, then id)."""

    @abc.abstractmethod
    async def insert(self, values: Mapping[str, Any]) -> PaymentRecord:
        """Store a new record (missing columns are NULL), or raise :class:`UniqueViolation`."""

    @abc.abstractmethod
    async def transition(
        self,
        record_id: str,
        *,
        sources: Sequence[State],
        tx_hash: str | None,
        values: Mapping[str, Any],
    ) -> PaymentRecord | None:
        """Set ``values`` where :func:`~x402gw.ledger.rules.transition_applies` (in one atomic
        step); the updated record, or None when it did not apply (or there is no such record)."""

    @abc.abstractmethod
    async def claim(
        self, record_id: str, *, now: datetime, stale_before: datetime
    ) -> PaymentRecord | None:
        """Mark a :func:`~x402gw.ledger.rules.claimable` record as claimed (its response status
        :data:`~x402gw.ledger.rules.CLAIMED_STATUS`, touched at ``now``); None when it is not."""

    @abc.abstractmethod
    async def outstanding(
        self, network: str, asset: str, payer: str, *, now: int, settled_since: datetime
    ) -> tuple[int, int]:
        """``(count, in-flight total)`` of a payer's records on an asset: the count of those
        that :func:`~x402gw.ledger.rules.counts_outstanding`, the exact sum of the amounts of
        those :func:`~x402gw.ledger.rules.in_flight`. Sees every committed write."""
