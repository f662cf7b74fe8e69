"""Processing sessions in the database; every read and write takes the owner, so another
user's session is not found. State changes are conditional UPDATEs built from the pure table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import ProcessingSession
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.sessions.rules import SessionEvent, SessionState, next_state, sources

__all__ = ["SessionRecord", "SessionStore"]


@dataclass(frozen=True)
class SessionRecord:
    """A session as its owner sees it."""

    id: str
    user_id: str
    name: str
    pipeline_type: str
    state: SessionState
    sender_data: dict[str, Any]
    sender_profile_id: str | None
    dataset_id: str | None
    enrichments: tuple[str, ...]
    job_id: str | None
    created_at: float
    updated_at: float


_COLUMNS = (
    ProcessingSession.id,
    ProcessingSession.user_id,
    ProcessingSession.name,
    ProcessingSession.pipeline_type,
    ProcessingSession.state,
    ProcessingSession.sender_data,
    ProcessingSession.sender_profile_id,
    ProcessingSession.dataset_id,
    ProcessingSession.enrichments,
    ProcessingSession.job_id,
    ProcessingSession.created_at,
    ProcessingSession.updated_at,
)


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        pipeline_type=row.pipeline_type,
        state=SessionState(row.state),
        sender_data=dict(row.sender_data or {}),
        sender_profile_id=row.sender_profile_id,
        dataset_id=row.dataset_id,
        enrichments=tuple(row.enrichments or ()),
        job_id=row.job_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SessionStore:
    """Sessions of every user."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        user_id: str,
        *,
        name: str,
        pipeline_type: str,
        sender_data: Mapping[str, Any] | None = None,
        sender_profile_id: str | None = None,
        dataset_id: str | None = None,
        session_id: str | None = None,
    ) -> SessionRecord:
        """A new session in state ``created`` (``session_id`` when the caller made the id
        first, to link a dataset to it)."""
        now = time.time()
        values: dict[str, Any] = {
            "id": session_id or new_id("sess"),
            "user_id": user_id,
            "name": name,
            "pipeline_type": pipeline_type,
            "state": SessionState.CREATED.value,
            "sender_data": dict(sender_data or {}),
            "sender_profile_id": sender_profile_id,
            "dataset_id": dataset_id,
            "enrichments": [],
            "job_id": None,
            "created_at": now,
            "updated_at": now,
        }
        async with write_transaction(self.engine) as conn:
            await conn.execute(insert(ProcessingSession).values(**values))
        return await self._must(user_id, values["id"])

    async def get(self, user_id: str, session_id: str) -> SessionRecord | None:
        """The user's session, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        ProcessingSession.id == session_id, ProcessingSession.user_id == user_id
                    )
                )
            ).first()
        return _record(row) if row else None

    async def _must(self, user_id: str, session_id: str) -> SessionRecord:
        record = await self.get(user_id, session_id)
        if record is None:
            raise LookupError(session_id)
        return record

    async def sessions_of_dataset(self, user_id: str, dataset_id: str) -> list[str]:
        """Ids of the user's sessions working on ``dataset_id``."""
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(
                select(ProcessingSession.id).where(
                    ProcessingSession.user_id == user_id,
                    ProcessingSession.dataset_id == dataset_id,
                )
            )
            return [row.id for row in rows]

    async def set_dataset(self, user_id: str, session_id: str, dataset_id: str) -> bool:
        """Link the session to its dataset once (a session's dataset never changes); whether
        this call linked it."""
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                update(ProcessingSession)
                .where(
                    ProcessingSession.id == session_id,
                    ProcessingSession.user_id == user_id,
                    ProcessingSession.dataset_id.is_(None),
                )
                .values(dataset_id=dataset_id, updated_at=time.time())
            )
        return bool(result.rowcount)

    async def set_sender_data(
        self, user_id: str, session_id: str, sender_data: Mapping[str, Any]
    ) -> SessionRecord | None:
        """Replace the session's sender data (the caller merged); None if not found."""
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                update(ProcessingSession)
                .where(ProcessingSession.id == session_id, ProcessingSession.user_id == user_id)
                .values(sender_data=dict(sender_data), updated_at=time.time())
            )
        return await self.get(user_id, session_id) if result.rowcount else None

    async def set_sender_profile(self, user_id: str, session_id: str, profile_id: str) -> None:
        """Use a saved sender profile for the session."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(ProcessingSession)
                .where(ProcessingSession.id == session_id, ProcessingSession.user_id == user_id)
                .values(sender_profile_id=profile_id, updated_at=time.time())
            )

    async def start(
        self, user_id: str, session_id: str, enrichments: list[str]
    ) -> SessionState | None:
        """Claim the session for processing (START); the state it left, or None when the
        session's state does not allow it (already processing, cancelled)."""
        allowed = [state.value for state in sources(SessionEvent.START)]
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(ProcessingSession.state).where(
                        ProcessingSession.id == session_id,
                        ProcessingSession.user_id == user_id,
                        ProcessingSession.state.in_(allowed),
                    )
                )
            ).first()
            if row is None:
                return None
            before = SessionState(row.state)
            result = await conn.execute(
                update(ProcessingSession)
                .where(
                    ProcessingSession.id == session_id,
                    ProcessingSession.state == before.value,
                )
                .values(
                    state=next_state(before, SessionEvent.START).value,
                    enrichments=enrichments,
                    job_id=None,
                    updated_at=time.time(),
                )
            )
        return before if result.rowcount else None

    async def abort(self, user_id: str, session_id: str, before: SessionState) -> None:
        """Undo a claim whose job was never enqueued (refused for credits or input)."""
        target = next_state(SessionState.PROCESSING, SessionEvent.ABORT, before=before)
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(ProcessingSession)
                .where(
                    ProcessingSession.id == session_id,
                    ProcessingSession.user_id == user_id,
                    ProcessingSession.state == SessionState.PROCESSING.value,
                    ProcessingSession.job_id.is_(None),
                )
                .values(state=target.value, updated_at=time.time())
            )

    async def set_job(self, user_id: str, session_id: str, job_id: str) -> None:
        """Record the job a claimed session runs."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(ProcessingSession)
                .where(ProcessingSession.id == session_id, ProcessingSession.user_id == user_id)
                .values(job_id=job_id, updated_at=time.time())
            )

    async def finish(self, session_id: str, job_id: str, event: SessionEvent) -> bool:
        """Move a processing session whose job ``job_id`` ended (SUCCEED, FAIL or CANCEL);
        idempotent: a second delivery (or a stale job) changes nothing."""
        target = next_state(SessionState.PROCESSING, event)
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                update(ProcessingSession)
                .where(
                    ProcessingSession.id == session_id,
                    ProcessingSession.job_id == job_id,
                    ProcessingSession.state.in_([s.value for s in sources(event)]),
                )
                .values(state=target.value, updated_at=time.time())
            )
        return bool(result.rowcount)

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Delete the user's session row; whether it existed."""
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                delete(ProcessingSession).where(
                    ProcessingSession.id == session_id, ProcessingSession.user_id == user_id
                )
            )
        return bool(result.rowcount)
