"""Datasets and their rows in the database: the one place other code creates, fills, reads and
annotates datasets (uploads, sessions, extractions, verification jobs).

A dataset keeps each row's original cells (``data``, keyed by the file's column names, in
``columns`` order) apart from the columns our jobs add (``added``: risk, found email, ...), so a
download can give both and a re-upload never loses a user's column to ours.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import Dataset, DatasetRow
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

__all__ = [
    "APPEND_BATCH",
    "MAX_NAME",
    "DatasetRecord",
    "DatasetStore",
    "NewRow",
    "PruneCounts",
    "StoredRow",
]

APPEND_BATCH = 1000
"""Rows written per INSERT while appending (bounded memory whatever the file's size)."""

MAX_NAME = 200
"""Longest dataset name (characters)."""

Archived = bool | None
"""Which datasets a list shows: False active only (the default), True archived only, None all."""


@dataclass(frozen=True)
class PruneCounts:
    """What a prune did (or, dry run, would do): rows deleted, rows kept, of which never
    verified, and the rows left."""

    deleted: int
    kept: int
    unverified: int
    row_count: int


@dataclass(frozen=True)
class NewRow:
    """A row to append: its line in the source file (None when it has none) and its cells."""

    line: int | None
    data: Mapping[str, str]


@dataclass(frozen=True)
class StoredRow:
    """A dataset row: position, source line, original cells and the columns we added."""

    idx: int
    line: int | None
    data: dict[str, Any]
    added: dict[str, Any]


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset as its owner sees it."""

    id: str
    user_id: str
    name: str
    source_type: str
    pipeline_type: str
    session_id: str | None
    columns: tuple[str, ...]
    added_columns: tuple[str, ...]
    mapping: dict[str, Any]
    row_count: int
    rejected_count: int
    file_key: str | None
    download_count: int
    last_downloaded_at: float | None
    created_at: float
    updated_at: float
    archived_at: float | None

    @property
    def archived(self) -> bool:
        """Whether the dataset is archived (hidden from lists unless asked for)."""
        return self.archived_at is not None


_COLUMNS = (
    Dataset.id,
    Dataset.user_id,
    Dataset.name,
    Dataset.source_type,
    Dataset.pipeline_type,
    Dataset.session_id,
    Dataset.columns,
    Dataset.added_columns,
    Dataset.mapping,
    Dataset.row_count,
    Dataset.rejected_count,
    Dataset.file_key,
    Dataset.download_count,
    Dataset.last_downloaded_at,
    Dataset.created_at,
    Dataset.updated_at,
    Dataset.archived_at,
)


def record_of(row: Any) -> DatasetRecord:
    """A :class:`DatasetRecord` from a row selected with the dataset columns."""
    return DatasetRecord(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        source_type=row.source_type,
        pipeline_type=row.pipeline_type,
        session_id=row.session_id,
        columns=tuple(row.columns or ()),
        added_columns=tuple(row.added_columns or ()),
        mapping=dict(row.mapping or {}),
        row_count=row.row_count,
        rejected_count=row.rejected_count,
        file_key=row.file_key,
        download_count=row.download_count,
        last_downloaded_at=row.last_downloaded_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived_at=row.archived_at,
    )


def _stored(row: Any) -> StoredRow:
    return StoredRow(
        idx=row.idx, line=row.line, data=dict(row.data or {}), added=dict(row.added or {})
    )


class DatasetStore:
    """Datasets of every user; every read takes the owner, so another user's id is not found."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        user_id: str,
        *,
        name: str,
        source_type: str,
        pipeline_type: str,
        columns: Sequence[str],
        mapping: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        file_key: str | None = None,
    ) -> DatasetRecord:
        """A new empty dataset with the file's ``columns`` (rows come through :meth:`append`)."""
        now = time.time()
        values: dict[str, Any] = {
            "id": new_id("ds"),
            "user_id": user_id,
            "name": name,
            "source_type": source_type,
            "pipeline_type": pipeline_type,
            "session_id": session_id,
            "columns": list(columns),
            "added_columns": [],
            "mapping": dict(mapping or {}),
            "row_count": 0,
            "rejected_count": 0,
            "file_key": file_key,
            "download_count": 0,
            "last_downloaded_at": None,
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
        }
        async with write_transaction(self.engine) as conn:
            await conn.execute(insert(Dataset).values(**values))
        return record_of(_Values(values))

    async def get(self, user_id: str, dataset_id: str) -> DatasetRecord | None:
        """The user's dataset ``dataset_id`` (archived ones too), or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(Dataset.id == dataset_id, Dataset.user_id == user_id)
                )
            ).first()
        return record_of(row) if row else None

    async def append(self, dataset_id: str, rows: Iterable[NewRow], *, rejected: int = 0) -> int:
        """Append ``rows`` after the last one, in batches of :data:`APPEND_BATCH`, and count
        ``rejected`` rows (reported to the user, not stored); returns the rows added.

        One transaction: a failure part-way adds nothing, so a retried upload cannot duplicate.
        """
        added = 0
        async with write_transaction(self.engine) as conn:
            start = await _row_count(conn, dataset_id)
            batch: list[dict[str, Any]] = []
            now = time.time()
            for row in rows:
                batch.append(
                    {
                        "dataset_id": dataset_id,
                        "idx": start + added,
                        "line": row.line,
                        "data": dict(row.data),
                        "added": {},
                        "updated_at": now,
                    }
                )
                added += 1
                if len(batch) >= APPEND_BATCH:
                    await conn.execute(insert(DatasetRow), batch)
                    batch = []
            if batch:
                await conn.execute(insert(DatasetRow), batch)
            await conn.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id)
                .values(
                    row_count=Dataset.row_count + added,
                    rejected_count=Dataset.rejected_count + rejected,
                    updated_at=now,
                )
            )
        return added

    async def rows(self, dataset_id: str, *, offset: int = 0, limit: int = 100) -> list[StoredRow]:
        """Rows ``offset``..``offset+limit`` in order (the caller checked ownership)."""
        async with read_connection(self.engine) as conn:
            result = await conn.execute(
                select(DatasetRow.idx, DatasetRow.line, DatasetRow.data, DatasetRow.added)
                .where(DatasetRow.dataset_id == dataset_id, DatasetRow.idx >= offset)
                .order_by(DatasetRow.idx)
                .limit(limit)
            )
            return [_stored(row) for row in result]

    async def iter_rows(
        self, dataset_id: str, *, batch: int = APPEND_BATCH
    ) -> AsyncIterator[StoredRow]:
        """Every row in order, read ``batch`` at a time (downloads and jobs stream through this)."""
        after = -1
        while True:
            async with read_connection(self.engine) as conn:
                result = await conn.execute(
                    select(DatasetRow.idx, DatasetRow.line, DatasetRow.data, DatasetRow.added)
                    .where(DatasetRow.dataset_id == dataset_id, DatasetRow.idx > after)
                    .order_by(DatasetRow.idx)
                    .limit(batch)
                )
                page = [_stored(row) for row in result]
            for row in page:
                yield row
            if len(page) < batch:
                return
            after = page[-1].idx

    async def annotate(self, dataset_id: str, values: Mapping[int, Mapping[str, Any]]) -> None:
        """Merge our columns into rows (``idx`` → {column: value}) and record new column names
        in ``added_columns`` (in first-seen order). Rows that no longer exist are ignored."""
        if not values:
            return
        now = time.time()
        async with write_transaction(self.engine) as conn:
            current = await conn.execute(
                select(DatasetRow.idx, DatasetRow.added).where(
                    DatasetRow.dataset_id == dataset_id, DatasetRow.idx.in_(list(values))
                )
            )
            for row in current.all():
                merged = {**(row.added or {}), **values[row.idx]}
                await conn.execute(
                    update(DatasetRow)
                    .where(DatasetRow.dataset_id == dataset_id, DatasetRow.idx == row.idx)
                    .values(added=merged, updated_at=now)
                )
            names = (
                await conn.execute(select(Dataset.added_columns).where(Dataset.id == dataset_id))
            ).scalar_one_or_none()
            if names is None:
                return
            known = list(names)
            for cells in values.values():
                known.extend(name for name in cells if name not in known)
            if known != list(names):
                await conn.execute(
                    update(Dataset)
                    .where(Dataset.id == dataset_id)
                    .values(added_columns=known, updated_at=now)
                )

    async def list_datasets(
        self,
        user_id: str,
        *,
        limit: int,
        offset: int = 0,
        after: str | None = None,
        search: str | None = None,
        pipeline_type: str | None = None,
        archived: Archived = False,
    ) -> list[DatasetRecord]:
        """The user's datasets, newest first: ``limit`` from ``offset``, after the id ``after``
        (a cursor), whose name contains ``search`` (case-insensitive), of ``pipeline_type``."""
        query = select(*_COLUMNS).where(Dataset.user_id == user_id)
        if after is not None:
            query = query.where(Dataset.id < after)
        if search:
            pattern = "%" + _escape_like(search.lower()) + "%"
            query = query.where(func.lower(Dataset.name).like(pattern, escape="\\"))
        if pipeline_type is not None:
            query = query.where(Dataset.pipeline_type == pipeline_type)
        if archived is True:
            query = query.where(Dataset.archived_at.is_not(None))
        elif archived is False:
            query = query.where(Dataset.archived_at.is_(None))
        query = query.order_by(Dataset.id.desc()).offset(offset).limit(limit)
        async with read_connection(self.engine) as conn:
            return [record_of(row) for row in await conn.execute(query)]

    async def _update(
        self, user_id: str, dataset_id: str, values: Mapping[str, Any], *extra: Any
    ) -> DatasetRecord | None:
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id, Dataset.user_id == user_id, *extra)
                .values(**values)
            )
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(Dataset.id == dataset_id, Dataset.user_id == user_id)
                )
            ).first()
        return record_of(row) if row else None

    async def rename(self, user_id: str, dataset_id: str, name: str) -> DatasetRecord | None:
        """Rename the user's dataset; the updated record, or None when it is not theirs."""
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"a dataset name has 1 to {MAX_NAME} characters")
        return await self._update(user_id, dataset_id, {"name": name, "updated_at": time.time()})

    async def archive(self, user_id: str, dataset_id: str) -> DatasetRecord | None:
        """Archive the user's dataset (hidden from lists, refused by jobs); archiving an archived
        one keeps its first ``archived_at``. None when it is not theirs."""
        now = time.time()
        return await self._update(
            user_id,
            dataset_id,
            {"archived_at": now, "updated_at": now},
            Dataset.archived_at.is_(None),
        )

    async def restore(self, user_id: str, dataset_id: str) -> DatasetRecord | None:
        """Un-archive the user's dataset (a no-op when it is not archived). None when it is not
        theirs."""
        return await self._update(
            user_id,
            dataset_id,
            {"archived_at": None, "updated_at": time.time()},
            Dataset.archived_at.is_not(None),
        )

    async def record_download(self, user_id: str, dataset_id: str) -> None:
        """Count one download of the user's dataset and note when it happened."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id, Dataset.user_id == user_id)
                .values(download_count=Dataset.download_count + 1, last_downloaded_at=time.time())
            )

    async def prune(
        self,
        dataset_id: str,
        remove: Callable[[Mapping[str, Any]], bool | None],
        *,
        dry_run: bool = False,
    ) -> PruneCounts:
        """Delete the rows for which ``remove(added)`` is true and number the rest 0..n-1 in
        their order; rows it answers None for (never verified) are kept and counted. One
        transaction; ``dry_run`` only counts. The caller checked ownership.

        PostgreSQL checks the ``(dataset_id, idx)`` key at every row, so the survivors first move
        to negative positions, then to their new ones (no two rows ever share a position).
        """
        doomed: list[int] = []
        kept = unverified = 0
        async with write_transaction(self.engine) as conn:
            after = -1
            while True:
                page = (
                    await conn.execute(
                        select(DatasetRow.idx, DatasetRow.added)
                        .where(DatasetRow.dataset_id == dataset_id, DatasetRow.idx > after)
                        .order_by(DatasetRow.idx)
                        .limit(APPEND_BATCH)
                    )
                ).all()
                for row in page:
                    verdict = remove(dict(row.added or {}))
                    if verdict:
                        doomed.append(row.idx)
                    else:
                        kept += 1
                        unverified += verdict is None
                if len(page) < APPEND_BATCH:
                    break
                after = page[-1].idx
            counts = PruneCounts(len(doomed), kept, unverified, kept)
            if dry_run or not doomed:
                if not dry_run:
                    await _set_count(conn, dataset_id, kept)
                return counts
            for start in range(0, len(doomed), APPEND_BATCH):
                await conn.execute(
                    delete(DatasetRow).where(
                        DatasetRow.dataset_id == dataset_id,
                        DatasetRow.idx.in_(doomed[start : start + APPEND_BATCH]),
                    )
                )
            await conn.execute(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .values(idx=-DatasetRow.idx - 1)
            )
            order = (
                select(
                    DatasetRow.idx.label("old"),
                    (func.row_number().over(order_by=DatasetRow.idx.desc()) - 1).label("new"),
                )
                .where(DatasetRow.dataset_id == dataset_id)
                .subquery()
            )
            await conn.execute(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id, DatasetRow.idx == order.c.old)
                .values(idx=order.c.new)
            )
            await _set_count(conn, dataset_id, kept)
        return counts

    async def delete(self, user_id: str, dataset_id: str) -> bool:
        """Delete the user's dataset; its rows go with it (foreign key cascade). Whether it
        existed."""
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                delete(Dataset).where(Dataset.id == dataset_id, Dataset.user_id == user_id)
            )
        return bool(result.rowcount)

    async def extend_columns(self, dataset_id: str, names: Sequence[str]) -> tuple[str, ...]:
        """Add original columns not seen yet (leads appended with new fields), in order;
        the dataset's columns afterwards."""
        async with write_transaction(self.engine) as conn:
            current = (
                await conn.execute(select(Dataset.columns).where(Dataset.id == dataset_id))
            ).scalar_one_or_none()
            if current is None:
                raise LookupError(f"no dataset {dataset_id!r}")
            known = list(current)
            seen = set(known)
            for name in names:
                if name not in seen:
                    known.append(name)
                    seen.add(name)
            if len(known) != len(current):
                await conn.execute(
                    update(Dataset)
                    .where(Dataset.id == dataset_id)
                    .values(columns=known, updated_at=time.time())
                )
        return tuple(known)

    async def set_mapping(self, dataset_id: str, mapping: Mapping[str, Any]) -> None:
        """Replace the dataset's mapping (lead field -> column, and what uploads record)."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id)
                .values(mapping=dict(mapping), updated_at=time.time())
            )


async def _row_count(conn: AsyncConnection, dataset_id: str) -> int:
    count = (
        await conn.execute(select(Dataset.row_count).where(Dataset.id == dataset_id))
    ).scalar_one_or_none()
    if count is None:
        raise LookupError(f"no dataset {dataset_id!r}")
    return int(count)


async def _set_count(conn: AsyncConnection, dataset_id: str, count: int) -> None:
    await conn.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id)
        .values(row_count=count, updated_at=time.time())
    )


def _escape_like(text: str) -> str:
    """``text`` matched literally by LIKE (with ``escape="\\"``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Values:
    """Attribute access over a dict of column values (a freshly inserted row)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
