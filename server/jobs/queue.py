"""``JobQueue``: the API routes call (enqueue, get, list, items, cancel) and the handler registry.

Every read and write is scoped to an owner: another owner's job id is not found, exactly like an
id that never existed. Handlers are registered per kind; ``enqueue`` refuses kinds nobody
handles, and workers claim only kinds they have handlers for.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.db.engine import Database
from server.jobs.errors import JobInputError, JobNotFound, UnknownKind
from server.jobs.models import Job, JobItem, Page
from server.jobs.rules import JobState, Limits, check_json, check_kind, check_owner
from server.jobs.store import JobStore, open_store

if TYPE_CHECKING:
    from server.jobs.context import JobContext

__all__ = ["Handler", "ItemHandler", "JobQueue", "Registration", "TerminalHook"]

log = logging.getLogger(__name__)

Handler = Callable[["JobContext"], Awaitable[Any]]
"""Runs a whole job (or, for kinds with an item handler, once after the last item): returns
the job's JSON result."""
ItemHandler = Callable[["JobContext", JobItem], Awaitable[Any]]
"""Runs one item of a bulk job: returns the item's JSON result, raises ``SkipItem`` or
``JobError`` (the item fails with that code)."""
TerminalHook = Callable[[Job], Awaitable[None]]
"""Called once a job is terminal (capture or release its credit reservation)."""

_JOB_ID = re.compile(r"job_[0-9a-f]{27}")
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Registration:
    """How one kind runs."""

    kind: str
    handler: Handler | None
    item_handler: ItemHandler | None
    item_concurrency: int
    max_attempts: int
    max_item_attempts: int


def new_job_id(now: float) -> str:
    """``job_`` + milliseconds (hex, so ids sort by creation) + 64 random bits."""
    return f"job_{int(now * 1000) % 16**11:011x}{secrets.token_hex(8)}"


class JobQueue:
    """Jobs on one database; one instance per process, shared by routes and workers."""

    def __init__(
        self,
        db: Database,
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        store: JobStore | None = None,
    ) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.clock = clock
        self.store: JobStore = store if store is not None else open_store(db)
        self._kinds: dict[str, Registration] = {}
        self._hooks: list[TerminalHook] = []
        self._wakeup = asyncio.Event()

    # --- registry ---------------------------------------------------------------------------

    def register(
        self,
        kind: str,
        handler: Handler | None = None,
        *,
        item_handler: ItemHandler | None = None,
        item_concurrency: int = 8,
        max_attempts: int = 5,
        max_item_attempts: int = 3,
    ) -> None:
        """Handle jobs of ``kind``: ``handler`` runs the job; with ``item_handler`` the worker
        runs each item (up to ``item_concurrency`` at once) and then ``handler`` (if any) as a
        finaliser. A job whose worker died ``max_attempts`` times fails (``attempts_exhausted``);
        so does an item that was started ``max_item_attempts`` times."""
        check_kind(kind)
        if handler is None and item_handler is None:
            raise ValueError("register a handler, an item_handler or both")
        if kind in self._kinds:
            raise ValueError(f"job kind {kind!r} is already registered")
        if item_concurrency < 1 or max_attempts < 1 or max_item_attempts < 1:
            raise ValueError("item_concurrency, max_attempts and max_item_attempts must be >= 1")
        self._kinds[kind] = Registration(
            kind, handler, item_handler, item_concurrency, max_attempts, max_item_attempts
        )

    def on_terminal(self, hook: TerminalHook) -> None:
        """Call ``hook(job)`` once each job is terminal (see :meth:`deliver_terminal`)."""
        self._hooks.append(hook)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Registered kinds."""
        return tuple(self._kinds)

    @property
    def has_hooks(self) -> bool:
        """A terminal hook is registered."""
        return bool(self._hooks)

    def registration(self, kind: str) -> Registration:
        """How ``kind`` runs; :class:`UnknownKind` if nobody handles it."""
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownKind(kind) from None

    # --- the API routes call --------------------------------------------------------------

    async def enqueue(
        self,
        owner_id: str,
        kind: str,
        payload: Any,
        items: Sequence[Any] | None = None,
        *,
        exclusive_key: str | None = None,
    ) -> Job:
        """Store a queued job (and its items, numbered from 0); workers pick it up.

        Raises :class:`UnknownKind`, or :class:`JobInputError` for a bad owner id, a payload or
        item that is not bounded JSON (``too_large`` when over a size limit), too many items;
        :class:`JobBusy` while another unfinished job holds ``exclusive_key``.
        """
        check_owner(owner_id)
        registration = self.registration(check_kind(kind))
        limits = self.limits
        check_json(payload, limit=limits.payload_bytes, depth=limits.depth, field="payload")
        inputs: list[Any] = []
        if items is not None:
            if isinstance(items, str | bytes) or not isinstance(items, Sequence):
                raise JobInputError("items", "must be a list")
            if len(items) > limits.items:
                raise JobInputError(
                    "items",
                    f"has {len(items)} rows, over the limit of {limits.items}",
                    too_large=True,
                )
            size = 0
            for index, value in enumerate(items):
                size += check_json(
                    value, limit=limits.item_bytes, depth=limits.depth, field=f"items[{index}]"
                )
                if size > limits.items_bytes:
                    raise JobInputError(
                        "items", f"are over {limits.items_bytes} bytes in all", too_large=True
                    )
            inputs = list(items)
        elif registration.item_handler is not None:
            raise JobInputError("items", "are required for this kind of job")
        now = self.clock()
        row = {
            "id": new_job_id(now),
            "owner_id": owner_id,
            "kind": kind,
            "payload": payload,
            "state": JobState.QUEUED.value,
            "total": len(inputs),
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "result": None,
            "error_code": None,
            "error_message": None,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
            "lease_owner": None,
            "lease_expires": None,
            "attempts": 0,
            "hooked_at": None,
            "exclusive_key": exclusive_key,
        }
        job = await self.store.insert(row, inputs)
        self._wakeup.set()
        return job

    async def get(self, owner_id: str, job_id: str) -> Job | None:
        """The owner's job, or None (unknown id, malformed id or another owner's job)."""
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            return None
        return await self.store.get(job_id, owner_id)

    async def list(
        self, owner_id: str, cursor: str | None = None, limit: int = 20, kind: str | None = None
    ) -> Page:
        """The owner's jobs, newest first; ``cursor`` is a previous page's ``next_cursor``."""
        if not 1 <= limit <= MAX_PAGE:
            raise JobInputError("limit", f"must be between 1 and {MAX_PAGE}")
        if cursor is not None and not _JOB_ID.fullmatch(cursor):
            raise JobInputError("cursor", "is not a cursor this API returned")
        if kind is not None:
            check_kind(kind)
        return await self.store.list_jobs(owner_id, cursor, limit, kind)

    async def items(
        self, owner_id: str, job_id: str, after: int = -1, limit: int = 100
    ) -> builtins.list[JobItem]:
        """The job's items with an index above ``after`` (rows of a bulk status page)."""
        if not 1 <= limit <= 1000:
            raise JobInputError("limit", "must be between 1 and 1000")
        if await self.get(owner_id, job_id) is None:
            raise JobNotFound(job_id)
        return await self.store.list_items(job_id, after, limit)

    async def count_items(self, owner_id: str, job_id: str, error_code: str) -> int:
        """How many of the owner's job's items ended with ``error_code``."""
        if await self.get(owner_id, job_id) is None:
            raise JobNotFound(job_id)
        return await self.store.count_items(job_id, error_code)

    async def cancel(self, owner_id: str, job_id: str) -> Job:
        """Cancel: a queued job ends now, a running one is asked to stop (``cancel_requested``
        until its worker does). Again on a job being cancelled: unchanged. Raises
        :class:`JobNotFound`, or :class:`JobFinished` for a terminal job."""
        if await self.get(owner_id, job_id) is None:
            raise JobNotFound(job_id)
        job = await self.store.cancel(owner_id, job_id, self.clock())
        if job.terminal and self._hooks:
            await self.deliver_terminal(f"api-{secrets.token_hex(6)}", job.id)
        return job

    # --- terminal hook --------------------------------------------------------------------

    async def deliver_terminal(
        self, worker_id: str, job_id: str | None = None, *, lease: float = 60.0
    ) -> bool:
        """Run the terminal hooks of one terminal job not delivered yet (``job_id``, or any).

        The delivery is leased: it runs in one process at a time, and once the hooks return it
        is recorded and never runs again. A process that dies inside a hook leaves the lease to
        expire, and the hook runs again: hooks must be idempotent by ``job.id`` (the credits
        ledger's capture/release are). Returns whether a job was delivered.
        """
        if not self._hooks:
            return False
        job = await self.store.claim_hook(worker_id, self.clock(), lease, job_id)
        if job is None:
            return False
        try:
            for hook in self._hooks:
                await hook(job)
        except Exception:
            log.exception("terminal hook failed for job %s; retried once its lease expires", job.id)
            return False
        return await self.store.mark_hooked(job.id, worker_id, self.clock())

    def wake(self) -> None:
        """Wake this process's idle workers (a job was enqueued or given back)."""
        self._wakeup.set()

    async def wait_for_work(self, seconds: float) -> None:
        """Sleep until a job is enqueued in this process, or ``seconds``."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            return
        self._wakeup.clear()
