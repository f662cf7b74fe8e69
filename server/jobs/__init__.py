"""Durable jobs for find, verify, bulk find, dataset verification and lead finding.

``JobQueue`` is what routes call (enqueue, get, list, items, cancel) and where handlers are
registered; ``Worker`` runs them. The store is the server database: SQLite embedded (no extra
process) or PostgreSQL for workers on several machines. See :mod:`server.jobs.rules` for states.
"""

from __future__ import annotations

from server.jobs.context import JobContext
from server.jobs.errors import (
    InvalidTransition,
    JobCancelled,
    JobError,
    JobFinished,
    JobInputError,
    JobNotFound,
    JobsError,
    SkipItem,
    UnknownKind,
)
from server.jobs.models import Job, JobItem, Page
from server.jobs.queue import Handler, ItemHandler, JobQueue, TerminalHook
from server.jobs.rules import Counts, ItemState, JobState, Limits
from server.jobs.worker import Worker

__all__ = [
    "Counts",
    "Handler",
    "InvalidTransition",
    "ItemHandler",
    "ItemState",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFinished",
    "JobInputError",
    "JobItem",
    "JobNotFound",
    "JobQueue",
    "JobState",
    "JobsError",
    "Limits",
    "Page",
    "SkipItem",
    "TerminalHook",
    "UnknownKind",
    "Worker",
]
