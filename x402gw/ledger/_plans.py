"""Compiled plans of the ledger's write statements, and the common shape of the SQLite and
PostgreSQL write paths (:class:`Writer`).

Each statement of :mod:`x402gw.ledger._statements` is compiled once per dialect: its SQL text, and in
parameter order each parameter's name and SQLAlchemy bind processor. Rows come back through the
dialect's result processors, so what a writer writes reads back the same through the engine.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from x402gw.ledger import _statements as sql

Processor = Callable[[Any], Any] | None
Statement = sa.Insert | sa.Update | sa.Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Compiled:
    """SQL text and, in parameter order, each parameter's name and bind processor."""

    text: str
    params: tuple[tuple[str, Processor], ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional driver arguments for ``values`` (by parameter name)."""
        return [values[name] if proc is None else proc(values[name]) for name, proc in self.params]


class Plans:
    """Compiled statements and the row decoder of the payments table, for one dialect.

    `result_overrides` replaces a column's result processor (by column name), for a driver set
    up differently from the engine's connections.
    """

    def __init__(
        self, dialect: Dialect, result_overrides: Mapping[str, Processor] | None = None
    ) -> None:
        self._dialect = dialect
        overrides = result_overrides or {}
        self._row = tuple(
            (
                col.name,
                overrides[col.name]
                if col.name in overrides
                else col.type.dialect_impl(dialect).result_processor(dialect, None),
            )
            for col in sql.payments.c
        )
        self._plans: dict[int, tuple[Statement, Compiled]] = {}

    def compiled(self, statement: Statement) -> Compiled:
        """The text and parameter plan of ``statement`` (cached by identity: the statements
        come from the builders in :mod:`x402gw.ledger._statements`, which cache them)."""
        found = self._plans.get(id(statement))
        if found is not None and found[0] is statement:
            return found[1]
        dialect = self._dialect
        done = statement.compile(dialect=dialect)
        assert isinstance(done, SQLCompiler)
        positions = done.positiontup or []
        params = tuple(
            (name, done.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in positions
        )
        plan = Compiled(str(done), params)
        self._plans[id(statement)] = (statement, plan)  # kept, so its id stays unique
        return plan

    def row(self, values: Iterable[Any]) -> dict[str, Any]:
        """A ``RETURNING`` row of every payments column, as the engine would decode it."""
        return {
            name: value if proc is None or value is None else proc(value)
            for (name, proc), value in zip(self._row, values, strict=True)
        }


class Writer(abc.ABC):
    """A write path: runs one ``INSERT``/``UPDATE ... RETURNING`` in autocommit on a connection
    of its own (opened on first use, reopened after :meth:`close`).

    Driver errors come out as SQLAlchemy's (``IntegrityError`` for a constraint violation,
    ``OperationalError`` otherwise) so the ledger treats them as it treats the engine's.
    """

    plans: ClassVar[Plans]
    integrity_errors: ClassVar[tuple[type[Exception], ...]]
    driver_errors: ClassVar[tuple[type[Exception], ...]]

    async def fetch_one(
        self, statement: Statement, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Run one ``... RETURNING`` statement; the first row returned, or None."""
        row = await self._first_row(statement, values)
        return None if row is None else self.plans.row(row)

    async def fetch_row(
        self, statement: Statement, values: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """Run one statement; its first row's columns as the driver gives them, or None."""
        row = await self._first_row(statement, values)
        return None if row is None else tuple(row)

    async def _first_row(
        self, statement: Statement, values: Mapping[str, Any]
    ) -> Iterable[Any] | None:
        plan = self.plans.compiled(statement)
        args = plan.args(values)
        try:
            return await self._fetch_row(plan.text, args)
        except self.integrity_errors as exc:
            raise sa.exc.IntegrityError(plan.text, args, exc) from exc
        except self.driver_errors as exc:
            raise sa.exc.OperationalError(plan.text, args, exc) from exc

    @abc.abstractmethod
    async def _fetch_row(self, text: str, args: list[Any]) -> Iterable[Any] | None:
        """The driver call: the first row of ``text`` run with ``args``, or None."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (it reopens on the next write)."""
