"""Pure rules of the job layer: states, the transition tables, progress counts, bounds, errors.

No I/O here, so every rule is property-tested; the store turns each event into one conditional
UPDATE (``state = CASE state WHEN ... END WHERE state IN (...)``) built from :func:`job_effect`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from server.jobs.errors import InvalidTransition, JobInputError

__all__ = [
    "ACTIVE",
    "ITEM_TERMINAL",
    "TERMINAL",
    "Counts",
    "ItemEvent",
    "ItemState",
    "JobEvent",
    "JobState",
    "Limits",
    "check_json",
    "check_kind",
    "check_owner",
    "counts_after",
    "error_code",
    "error_message",
    "item_effect",
    "item_next",
    "job_effect",
    "job_next",
]


class JobState(StrEnum):
    """Life of a job; ``succeeded``, ``failed`` and ``cancelled`` are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCEL_REQUESTED = "cancel_requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobEvent(StrEnum):
    """What a caller or a worker does to a job."""

    CLAIM = "claim"  # a worker takes the lease (new job, or one whose lease expired)
    HEARTBEAT = "heartbeat"  # the lease holder extends its lease
    RELEASE = "release"  # the lease holder gives the job back (graceful shutdown)
    CANCEL = "cancel"  # the owner asks: queued jobs stop at once, running ones are asked to
    SUCCEED = "succeed"
    FAIL = "fail"
    ACKNOWLEDGE_CANCEL = "acknowledge_cancel"  # the worker stopped a job whose cancel was asked


class ItemState(StrEnum):
    """Life of one input row of a bulk job; ``done``, ``failed`` and ``skipped`` are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class ItemEvent(StrEnum):
    """What the job's lease holder does to one item."""

    START = "start"  # also restarts an item a crashed worker left running
    COMPLETE = "complete"
    FAIL = "fail"
    SKIP = "skip"


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE: frozenset[JobState] = frozenset(JobState) - TERMINAL
ITEM_TERMINAL: frozenset[ItemState] = frozenset(
    {ItemState.DONE, ItemState.FAILED, ItemState.SKIPPED}
)

Q, R, C = JobState.QUEUED, JobState.RUNNING, JobState.CANCEL_REQUESTED
_JOB_TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (Q, JobEvent.CLAIM): R,
    (R, JobEvent.CLAIM): R,  # only once the lease expired (the store's guard)
    (C, JobEvent.CLAIM): C,  # the new holder finishes it as cancelled
    (R, JobEvent.HEARTBEAT): R,
    (C, JobEvent.HEARTBEAT): C,
    (R, JobEvent.RELEASE): R,
    (C, JobEvent.RELEASE): C,
    (Q, JobEvent.CANCEL): JobState.CANCELLED,
    (R, JobEvent.CANCEL): C,
    (C, JobEvent.CANCEL): C,
    (R, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (C, JobEvent.SUCCEED): JobState.SUCCEEDED,  # it finished before it noticed the request
    (R, JobEvent.FAIL): JobState.FAILED,
    (C, JobEvent.FAIL): JobState.FAILED,
    (C, JobEvent.ACKNOWLEDGE_CANCEL): JobState.CANCELLED,
}

P, RI = ItemState.PENDING, ItemState.RUNNING
_ITEM_TRANSITIONS: dict[tuple[ItemState, ItemEvent], ItemState] = {
    (P, ItemEvent.START): RI,
    (RI, ItemEvent.START): RI,
    (RI, ItemEvent.COMPLETE): ItemState.DONE,
    (P, ItemEvent.COMPLETE): ItemState.DONE,  # a handler completing rows it never started
    (RI, ItemEvent.FAIL): ItemState.FAILED,
    (P, ItemEvent.FAIL): ItemState.FAILED,
    (RI, ItemEvent.SKIP): ItemState.SKIPPED,
    (P, ItemEvent.SKIP): ItemState.SKIPPED,
}

# Events that need the caller to hold the job's lease (the store adds that guard).
LEASED_EVENTS: frozenset[JobEvent] = frozenset(
    {
        JobEvent.HEARTBEAT,
        JobEvent.RELEASE,
        JobEvent.SUCCEED,
        JobEvent.FAIL,
        JobEvent.ACKNOWLEDGE_CANCEL,
    }
)


def job_next(state: JobState, event: JobEvent) -> JobState:
    """The state after ``event``, or :class:`InvalidTransition`."""
    try:
        return _JOB_TRANSITIONS[(JobState(state), JobEvent(event))]
    except KeyError:
        raise InvalidTransition(str(state), str(event)) from None


def job_effect(event: JobEvent) -> dict[JobState, JobState]:
    """Every state ``event`` applies in, mapped to the state it leads to (the UPDATE's CASE)."""
    return {s: t for (s, e), t in _JOB_TRANSITIONS.items() if e == JobEvent(event)}


def item_next(state: ItemState, event: ItemEvent) -> ItemState:
    """The item state after ``event``, or :class:`InvalidTransition`."""
    try:
        return _ITEM_TRANSITIONS[(ItemState(state), ItemEvent(event))]
    except KeyError:
        raise InvalidTransition(str(state), str(event)) from None


def item_effect(event: ItemEvent) -> dict[ItemState, ItemState]:
    """Every item state ``event`` applies in, mapped to the state it leads to."""
    return {s: t for (s, e), t in _ITEM_TRANSITIONS.items() if e == ItemEvent(event)}


# --- progress ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Progress of a job: ``total`` items, of which ``done``, ``failed`` and ``skipped`` ended."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def finished(self) -> int:
        """Items in a terminal state."""
        return self.done + self.failed + self.skipped

    @property
    def fraction(self) -> float:
        """Share of items finished, 0.0 to 1.0 (0.0 for a job without items)."""
        return self.finished / self.total if self.total else 0.0

    @property
    def complete(self) -> bool:
        """Every item has finished."""
        return self.finished >= self.total

    def as_json(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
        }


_COUNTED = {ItemState.DONE: "done", ItemState.FAILED: "failed", ItemState.SKIPPED: "skipped"}


def counts_after(counts: Counts, before: ItemState, after: ItemState) -> Counts:
    """Counts once one item moved ``before`` -> ``after`` (terminal states are never left)."""
    if before in ITEM_TERMINAL and before != after:
        raise InvalidTransition(str(before), f"move to {after}")
    if before in ITEM_TERMINAL or after not in ITEM_TERMINAL:
        return counts
    field = _COUNTED[after]
    values = counts.as_json()
    values[field] += 1
    if values["done"] + values["failed"] + values["skipped"] > counts.total:
        raise InvalidTransition(str(before), "count past the total")
    return Counts(**values)


def count_column(state: ItemState) -> str | None:
    """The job column an item reaching ``state`` increments (None: not terminal)."""
    return _COUNTED.get(state)


# --- bounds on what callers hand in -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on enqueued data (JSON sizes are of the compact UTF-8 encoding)."""

    payload_bytes: int = 64 * 1024
    item_bytes: int = 8 * 1024
    items: int = 100_000
    items_bytes: int = 16 * 1024 * 1024
    result_bytes: int = 1024 * 1024
    item_result_bytes: int = 16 * 1024
    depth: int = 32


_KIND = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_OWNER = re.compile(r"[!-~]{1,200}")  # printable ASCII without spaces
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_MESSAGE = 500


def check_kind(kind: object) -> str:
    """A job kind: lower-case ``[a-z][a-z0-9_.]``, up to 64 characters."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise JobInputError("kind", "must be 1-64 characters of a-z, 0-9, '_' and '.'")
    return kind


def check_owner(owner_id: object) -> str:
    """An owner id: 1-200 printable ASCII characters."""
    if not isinstance(owner_id, str) or not _OWNER.fullmatch(owner_id):
        raise JobInputError("owner_id", "must be 1-200 printable ASCII characters")
    return owner_id


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def check_json(value: Any, *, limit: int, depth: int, field: str) -> int:
    """Check ``value`` is JSON (string keys, finite numbers) within ``depth`` and ``limit`` bytes.

    Returns its encoded size. Depth is checked first, without recursion, so hostile nesting
    cannot overflow the encoder.
    """
    if not _depth_ok(value, depth):
        raise JobInputError(field, f"is nested deeper than {depth} levels")
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise JobInputError(field, f"is not JSON: {type(exc).__name__}") from None
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise JobInputError(field, "holds a lone surrogate (not UTF-8)") from None
    if size > limit:
        raise JobInputError(field, f"is {size} bytes, over the limit of {limit}", too_large=True)
    return size


# --- what a failed job may say about itself ------------------------------------------------

GENERIC_CODE = "internal_error"
GENERIC_MESSAGE = "the job failed; the operator's log has the details"


def error_code(code: object) -> str:
    """A handler's error code if it is a short snake_case word, else the generic one."""
    return code if isinstance(code, str) and _CODE.fullmatch(code) else GENERIC_CODE


def error_message(message: object) -> str:
    """A handler's public message on one line, cut to 500 characters (never a traceback)."""
    if not isinstance(message, str) or not message.strip():
        return GENERIC_MESSAGE
    line = " ".join(message.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."
