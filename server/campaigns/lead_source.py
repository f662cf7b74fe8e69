"""Where leads come from: inline mappings or a dataset's rows, each turned into a lead with a
normalised address (lower case); addresses emailintel finds invalid offline are left out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emailintel.verify import Validator
from server.campaigns.lead_store import MAX_LEADS, NewLead
from server.campaigns.preflight_facts import offline_verdict
from server.datasets.store import DatasetRecord, DatasetStore

__all__ = ["MAX_ADDRESS", "Collected", "ColumnUnknown", "collect", "dataset_leads", "email_column"]

MAX_ADDRESS = 320
MAX_EXAMPLES = 20


class ColumnUnknown(Exception):
    """The dataset has no such email column (or maps none)."""


@dataclass
class Collected:
    """Leads ready to add, and the addresses left out as invalid."""

    leads: list[NewLead] = field(default_factory=list)
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0


def collect(
    validator: Validator,
    rows: Iterable[tuple[Any, Mapping[str, Any], int | None]],
    into: Collected | None = None,
) -> Collected:
    """``rows`` of (address, variables, source row) into leads: addresses stripped and lower
    cased, repeats counted as duplicates, invalid ones counted and left out."""
    out = into or Collected()
    for raw, data, row_index in rows:
        email = raw.strip().lower() if isinstance(raw, str) else ""
        verdict = offline_verdict(validator, email) if 0 < len(email) <= MAX_ADDRESS else None
        if verdict is None or verdict[0] == "invalid":
            out.invalid += 1
            if len(out.invalid_examples) < MAX_EXAMPLES:
                out.invalid_examples.append(str(raw)[:MAX_ADDRESS])
            continue
        if email in out.seen:
            out.duplicates += 1
            continue
        out.seen.add(email)
        out.leads.append(NewLead(email, {**data, "email": email}, row_index, verdict))
    return out


def email_column(dataset: DatasetRecord, wanted: str | None) -> str:
    """The dataset column holding addresses: ``wanted`` if the dataset has it, else the column
    its mapping names for email; ColumnUnknown otherwise."""
    columns = {*dataset.columns, *dataset.added_columns}
    if wanted is not None:
        if wanted not in columns:
            raise ColumnUnknown(wanted)
        return wanted
    mapped = dataset.mapping.get("email")
    if isinstance(mapped, str) and mapped in columns:
        return mapped
    raise ColumnUnknown("email")


async def dataset_leads(
    store: DatasetStore, dataset: DatasetRecord, column: str, validator: Validator, into: Collected
) -> Collected:
    """Every row of ``dataset`` as a lead (variables: its cells and the columns we added),
    reading no more than :data:`MAX_LEADS` + 1 rows (more is refused by the lead store)."""
    rows: list[tuple[Any, Mapping[str, Any], int | None]] = []
    async for row in store.iter_rows(dataset.id):
        values = {**row.data, **row.added}
        rows.append((values.get(column), values, row.idx))
        if len(rows) > MAX_LEADS:
            break
    return await asyncio.to_thread(collect, validator, rows, into)  # CPU: off the loop
