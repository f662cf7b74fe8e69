"""An in-memory store: the ledger's twin for fast unit tests, with no database at all.

It keeps rows as the SQL stores do (column → value) and decides with the same predicates of
:mod:`x402gw.ledger.rules` that the SQL statements are built from, so it passes the ledger's
behavioural suite alongside SQLite and PostgreSQL. Every operation first yields to the event
loop (where a database round trip would), then runs to the end without awaiting: atomic, as one
SQL statement is. Nothing is durable: never use it where payments must survive a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from x402gw.ledger import rules
from x402gw.ledger.records import COLUMNS, PaymentRecord, check_columns, record_from_row
from x402gw.ledger.rules import State
from x402gw.ledger.store import Store, UniqueViolation

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Records in a dict. Several ledgers given one store share it, as they would a database;
    closing a ledger keeps the records.

    Like the SQL indexes, dicts find the live holder of an authorization or payment identifier
    and a payer's records without a scan; they follow every write.
    """

    name = "memory"

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._live_keys: dict[tuple[str, str, str, str], str] = {}
        self._live_pids: dict[str, str] = {}
        self._by_payer: dict[tuple[str, str, str], list[str]] = {}

    async def migrate(self) -> str | None:
        """Nothing to build; no revision."""
        await asyncio.sleep(0)
        return None

    async def close(self) -> None:
        """Nothing to release: the records stay."""

    async def get(self, record_id: str) -> PaymentRecord | None:
        await asyncio.sleep(0)
        row = self._rows.get(record_id)
        return None if row is None else record_from_row(row)

    def _live_authorization(
        self, network: str, asset: str, payer: str, nonce: str
    ) -> dict[str, Any] | None:
        found = self._live_keys.get((network, asset, payer, nonce))
        return None if found is None else self._rows[found]

    def _live_payment_identifier(self, payment_identifier: str) -> dict[str, Any] | None:
        found = self._live_pids.get(payment_identifier)
        return None if found is None else self._rows[found]

    def _index(self, row: dict[str, Any]) -> None:
        """Keep the live keys of ``row`` as its state says (after an insert or a write)."""
        key = (row["network"], row["asset"], row["payer"], row["nonce"])
        pid = row["payment_identifier"]
        if rules.is_live(State(row["state"])):
            self._live_keys[key] = row["id"]
            if pid is not None:
                self._live_pids[pid] = row["id"]
            return
        if self._live_keys.get(key) == row["id"]:
            del self._live_keys[key]
        if pid is not None and self._live_pids.get(pid) == row["id"]:
            del self._live_pids[pid]

    async def live_by_authorization(
        self, network: str, asset: str, payer: str, nonce: str
    ) -> PaymentRecord | None:
        await asyncio.sleep(0)
        row = self._live_authorization(network, asset, payer, nonce)
        return None if row is None else record_from_row(row)

    async def live_by_payment_identifier(self, payment_identifier: str) -> PaymentRecord | None:
        await asyncio.sleep(0)
        row = self._live_payment_identifier(payment_identifier)
        return None if row is None else record_from_row(row)

    async def select(
        self, state: State | None = None, *, updated_before: datetime | None = None
    ) -> list[PaymentRecord]:
        await asyncio.sleep(0)
        rows = [
            row
            for row in self._rows.values()
            if (state is None or row["state"] == state.value)
            and (updated_before is None or row["updated_at"] < updated_before)
        ]
        rows.sort(key=lambda row: (row["created_at"], row["id"]))
        return [record_from_row(row) for row in rows]

    async def insert(self, values: Mapping[str, Any]) -> PaymentRecord:
        check_columns(list(values))
        await asyncio.sleep(0)
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(_copy(values))
        if row["id"] in self._rows:
            raise UniqueViolation(f"record id {row['id']} exists")
        if rules.is_live(State(row["state"])):
            if self._live_authorization(row["network"], row["asset"], row["payer"], row["nonce"]):
                raise UniqueViolation("the authorization is held by a live record")
            pid = row["payment_identifier"]
            if pid is not None and self._live_payment_identifier(pid) is not None:
                raise UniqueViolation("the payment identifier is held by a live record")
        self._rows[row["id"]] = row
        self._by_payer.setdefault((row["network"], row["asset"], row["payer"]), []).append(
            row["id"]
        )
        self._index(row)
        return record_from_row(row)

    async def transition(
        self,
        record_id: str,
        *,
        sources: Sequence[State],
        tx_hash: str | None,
        values: Mapping[str, Any],
    ) -> PaymentRecord | None:
        check_columns(list(values))
        await asyncio.sleep(0)
        row = self._rows.get(record_id)
        if row is None or not rules.transition_applies(
            State(row["state"]), row["tx_hash"], sources, tx_hash
        ):
            return None
        row.update(_copy(values))
        self._index(row)
        return record_from_row(row)

    async def claim(
        self, record_id: str, *, now: datetime, stale_before: datetime
    ) -> PaymentRecord | None:
        await asyncio.sleep(0)
        row = self._rows.get(record_id)
        if row is None or not rules.claimable(
            State(row["state"]), row["response_status"], row["updated_at"], stale_before
        ):
            return None
        row.update(response_status=rules.CLAIMED_STATUS, updated_at=now)
        return record_from_row(row)

    async def outstanding(
        self, network: str, asset: str, payer: str, *, now: int, settled_since: datetime
    ) -> tuple[int, int]:
        await asyncio.sleep(0)
        count = total = 0
        for record_id in self._by_payer.get((network, asset, payer), ()):
            row = self._rows[record_id]
            state = State(row["state"])
            if rules.in_flight(state, row["valid_before"], now):
                total += int(row["amount"])
            if rules.counts_outstanding(
                state, row["valid_before"], row["updated_at"], now, settled_since
            ):
                count += 1
        return count, total


def _copy(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values to keep: the one mutable column (header pairs) is copied, so a caller's
    list changed later does not change the stored record."""
    copied = dict(values)
    headers = copied.get("response_headers")
    if headers is not None:
        copied["response_headers"] = [list(pair) for pair in headers]
    return copied
