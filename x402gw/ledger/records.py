"""What the ledger hands out: payment records, stored responses, reconcile summaries, and the
errors of its operations; and the one decoder of a stored row that every store shares.

No database code: the in-memory store and the SQL stores keep rows as column → value mappings
(:data:`COLUMNS`) and turn them into records with :func:`record_from_row`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from x402gw.ledger.rules import InvalidPaymentData, LedgerError, State, authorization_key

__all__ = [
    "COLUMNS",
    "AuthorizationInUse",
    "ConflictingTxHash",
    "LedgerUnavailable",
    "PaymentIdentifierConflict",
    "PaymentIdentifierInUse",
    "PaymentRecord",
    "ReconcileSummary",
    "RecordNotFound",
    "Response",
    "StoredResponse",
    "record_from_row",
    "response_values",
]


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


COLUMNS: Final = (
    "id",
    "scheme",
    "network",
    "asset",
    "payer",
    "pay_to",
    "amount",
    "nonce",
    "valid_before",
    "resource",
    "fingerprint",
    "payment_identifier",
    "state",
    "tx_hash",
    "block_number",
    "error",
    "response_status",
    "response_headers",
    "response_body",
    "created_at",
    "updated_at",
    "reconciled_at",
    "signature_hash",
)
"""The stored columns of one record, in table order (the SQL table has exactly these)."""


def check_columns(columns: Sequence[str]) -> None:
    """Refuse a write naming a column that records do not have."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise InvalidPaymentData(f"not ledger columns: {sorted(unknown)}")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite returns naive datetimes; we only ever write UTC


def record_from_row(m: Mapping[Any, Any]) -> PaymentRecord:
    """The record of one stored row (column → value, as :data:`COLUMNS` names them)."""
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


Response = tuple[int, Sequence[tuple[str, str]] | Mapping[str, str], bytes]
"""A response to keep with a record: status, header pairs, body."""


def response_values(
    status: int, headers: Sequence[tuple[str, str]] | Mapping[str, str], body: bytes
) -> dict[str, Any]:
    """The response columns for (status, headers, body), checked: status 100-599, headers as
    (name, value) strings (a mapping or pairs, repeats allowed), body bytes."""
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
    return {"response_status": status, "response_headers": clean, "response_body": bytes(body)}
