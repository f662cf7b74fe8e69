"""What the job layer hands back: a job, one of its items, a page of jobs (frozen values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.jobs.rules import TERMINAL, Counts, ItemState, JobState

__all__ = ["Job", "JobItem", "Page"]


@dataclass(frozen=True, slots=True)
class Job:
    """One job as stored; :meth:`as_json` is its public shape (no lease or worker details)."""

    id: str
    owner_id: str
    kind: str
    state: JobState
    payload: Any
    counts: Counts
    result: Any
    error_code: str | None
    error_message: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    attempts: int

    @property
    def terminal(self) -> bool:
        """The job will not change any more."""
        return self.state in TERMINAL

    @property
    def status(self) -> str:
        """The public status: ``cancel_requested`` still shows as ``running``."""
        return "running" if self.state is JobState.CANCEL_REQUESTED else self.state.value

    def as_json(self) -> dict[str, Any]:
        """``{id, object, kind, status, cancel_requested, progress, result, error, created,
        updated, finished}``: exactly one of ``result``/``error`` once the job is terminal."""
        error = None
        if self.state is JobState.FAILED:
            error = {"code": self.error_code, "message": self.error_message}
        return {
            "id": self.id,
            "object": "job",
            "kind": self.kind,
            "status": self.status,
            "cancel_requested": self.state is JobState.CANCEL_REQUESTED,
            "progress": {**self.counts.as_json(), "fraction": round(self.counts.fraction, 4)},
            "result": self.result if self.state is JobState.SUCCEEDED else None,
            "error": error,
            "created": self.created_at,
            "updated": self.updated_at,
            "finished": self.finished_at,
        }

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        """Build from a ``jobs`` row mapping."""
        return cls(
            id=row["id"],
            owner_id=row["owner_id"],
            kind=row["kind"],
            state=JobState(row["state"]),
            payload=row["payload"],
            counts=Counts(row["total"], row["done"], row["failed"], row["skipped"]),
            result=row["result"],
            error_code=row["error_code"],
            error_message=row["error_message"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            attempts=row["attempts"],
        )


@dataclass(frozen=True, slots=True)
class JobItem:
    """One input row of a bulk job and what became of it."""

    job_id: str
    index: int
    input: Any
    state: ItemState
    result: Any
    error_code: str | None
    attempts: int

    def as_json(self) -> dict[str, Any]:
        """``{index, status, input, result, error}`` for a status page's rows."""
        return {
            "index": self.index,
            "status": self.state.value,
            "input": self.input,
            "result": self.result,
            "error": self.error_code,
        }

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobItem:
        """Build from a ``job_items`` row mapping."""
        return cls(
            job_id=row["job_id"],
            index=row["idx"],
            input=row["input"],
            state=ItemState(row["state"]),
            result=row["result"],
            error_code=row["error_code"],
            attempts=row["attempts"],
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a cursor listing: pass ``next_cursor`` back to get the next one."""

    data: list[Job]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        """Another page follows."""
        return self.next_cursor is not None
