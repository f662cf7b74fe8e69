"""Processing a session: one ``session.process`` job whose items are the dataset's rows, each
running the requested enrichments through the same steps the bulk routes' jobs use (validate,
verify, find, LinkedIn), writing the answers into the row's added columns.

Credits: each enrichment is reserved per row that has its fields, at that enrichment's bulk
price (volume discount per enrichment); when the job ends the hook captures, per enrichment,
the rows it answered and returns the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from server.billing.pricing import Price, credits_for
from server.datasets.store import DatasetStore
from server.jobs.errors import JobError, SkipItem
from server.jobs.models import Job, JobItem
from server.jobs.rules import JobState
from server.sessions.rules import (
    PRICE_KEYS,
    Enrichment,
    LeadFields,
    SessionEvent,
    cells_of,
    fields_of,
    plan_row,
)
from server.sessions.store import SessionStore

__all__ = [
    "KIND",
    "ROW_KEYS",
    "Plan",
    "Steps",
    "delivered_credits",
    "job_ended",
    "plan_items",
    "run_row",
    "session_event",
]

KIND = "session.process"
OPERATION = "session.process"
"""The ledger's operation name for a session's reservation."""
ROW_KEYS = ("email", "first_name", "last_name", "company", "domain", "title", "location")

Step = Callable[[LeadFields], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Steps:
    """One answer per enrichment for a row's fields (raising JobError or SkipItem)."""

    validate: Step
    verify: Step
    find: Step
    linkedin: Step

    def of(self, enrichment: Enrichment) -> Step:
        """The step running ``enrichment``."""
        return cast(Step, getattr(self, enrichment))


@dataclass(frozen=True)
class Plan:
    """The job items of a session's rows and what they reserve."""

    items: list[dict[str, Any]]
    units: dict[str, int]
    skipped: int

    def credits(self, prices: Mapping[str, Price]) -> int:
        """Credits to reserve: per enrichment, its rows at its bulk price."""
        return sum(credits_for(prices[key], count).total for key, count in self.units.items())


def plan_items(
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    mapping: Mapping[str, str],
    wanted: list[Enrichment],
) -> Plan:
    """Items for rows (index, cells) with at least one applicable enrichment (pure)."""
    items: list[dict[str, Any]] = []
    units = {PRICE_KEYS[e]: 0 for e in wanted}
    skipped = 0
    for idx, data in rows:
        lead = fields_of(data, mapping)
        todo = plan_row(lead, wanted)
        if not todo:
            skipped += 1
            continue
        for enrichment in todo:
            units[PRICE_KEYS[enrichment]] += 1
        fields = {k: getattr(lead, k) for k in ROW_KEYS if getattr(lead, k) is not None}
        items.append({"row": idx, "do": list(todo), **fields})
    return Plan(items, {k: v for k, v in units.items() if v}, skipped)


def _lead(item: Mapping[str, Any]) -> LeadFields:
    return LeadFields(**{k: item.get(k) for k in ROW_KEYS})


async def run_row(
    steps: Steps, datasets: DatasetStore, dataset_id: str, item: JobItem
) -> dict[str, Any]:
    """Run a row's enrichments, write their columns into the dataset row, and return the
    compact item result ``{row, charged, errors}``; a row whose every enrichment failed fails
    (JobError with the first code), one skipped by all is skipped."""
    data = cast(Mapping[str, Any], item.input)
    lead = _lead(data)
    cells: dict[str, Any] = {}
    charged: list[str] = []
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for enrichment in cast(list[Enrichment], data.get("do", [])):
        try:
            answer = await steps.of(enrichment)(lead)
        except SkipItem as exc:
            skipped[enrichment] = exc.code
            cells[f"{enrichment}_error"] = exc.code
            continue
        except JobError as exc:
            errors[enrichment] = exc.code
            cells[f"{enrichment}_error"] = exc.code
            continue
        charged.append(enrichment)
        cells.update(cells_of(enrichment, answer))
        cells[f"{enrichment}_error"] = None
    await datasets.annotate(dataset_id, {int(data["row"]): cells})
    if not charged and errors:
        first = next(iter(errors.values()))
        raise JobError(first, f"every enrichment of row {data['row']} failed")
    if not charged and not errors and skipped:
        raise SkipItem(next(iter(skipped.values())))
    return {"row": data["row"], "charged": charged, "errors": errors}


def delivered_credits(
    parts: Mapping[str, Any], prices: Mapping[str, Price], items: list[JobItem]
) -> int:
    """Credits a finished session job delivered: per enrichment, the rows it answered."""
    answered = {key: 0 for key in parts}
    for item in items:
        result = item.result if isinstance(item.result, Mapping) else {}
        for enrichment in result.get("charged", ()):
            key = PRICE_KEYS.get(str(enrichment))
            if key in answered:
                answered[key] += 1
    return sum(credits_for(prices[key], n).total for key, n in answered.items() if n)


def session_event(job: Job) -> SessionEvent:
    """What a terminal job does to its session."""
    if job.state is JobState.SUCCEEDED:
        return SessionEvent.SUCCEED
    if job.state is JobState.CANCELLED:
        return SessionEvent.CANCEL
    return SessionEvent.FAIL


async def job_ended(sessions: SessionStore, job: Job) -> None:
    """Move the job's session out of ``processing`` (idempotent)."""
    payload = job.payload if isinstance(job.payload, Mapping) else {}
    session_id = payload.get("session_id")
    if isinstance(session_id, str):
        await sessions.finish(session_id, job.id, session_event(job))
