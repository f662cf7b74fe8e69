"""The payment ledger: one authorization, one use; settlement states; idempotent replays.

Public API: :class:`Ledger` on a database URL (SQLite or PostgreSQL) or on a
:class:`~x402gw.ledger.store.Store` such as :class:`MemoryStore` (fast tests, not durable), the
records it hands out and its errors. The modules, one job each:

* :mod:`~x402gw.ledger.rules`: the pure rules (states, the transition table, normalisation,
  which records are live, in flight or claimable, replay and reconcile decisions);
* :mod:`~x402gw.ledger.records`: records, stored responses and the ledger's errors;
* :mod:`~x402gw.ledger.store`: the interface of a store; :mod:`~x402gw.ledger.memory`: the
  in-memory store;
* private: the SQL statements (``_statements``), their compiled plans and writers for SQLite
  and PostgreSQL (``_plans``, ``_sqlite``, ``_postgres``), the SQL store (``_sql``), Alembic
  ``migrations``.

Importing this package loads no database library; a SQL ledger loads SQLAlchemy when created.
"""

from __future__ import annotations

from x402gw.ledger._ledger import (
    DEFAULT_URL,
    AuthorizationChecker,
    Ledger,
    TxChecker,
    TxFinder,
)
from x402gw.ledger.memory import MemoryStore
from x402gw.ledger.records import (
    AuthorizationInUse,
    ConflictingTxHash,
    LedgerUnavailable,
    PaymentIdentifierConflict,
    PaymentIdentifierInUse,
    PaymentRecord,
    ReconcileSummary,
    RecordNotFound,
    Response,
    StoredResponse,
)
from x402gw.ledger.rules import (
    BLOCKING,
    TERMINAL,
    Event,
    InvalidPaymentData,
    InvalidTransition,
    LedgerError,
    NonceUse,
    State,
    TxOutcome,
    next_state,
    request_fingerprint,
)
from x402gw.ledger.store import Store

__all__ = [
    "BLOCKING",
    "DEFAULT_URL",
    "TERMINAL",
    "AuthorizationChecker",
    "AuthorizationInUse",
    "ConflictingTxHash",
    "Event",
    "InvalidPaymentData",
    "InvalidTransition",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "MemoryStore",
    "NonceUse",
    "PaymentIdentifierConflict",
    "PaymentIdentifierInUse",
    "PaymentRecord",
    "ReconcileSummary",
    "RecordNotFound",
    "Response",
    "State",
    "Store",
    "StoredResponse",
    "TxChecker",
    "TxFinder",
    "TxOutcome",
    "next_state",
    "request_fingerprint",
]
