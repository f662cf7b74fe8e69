"""A preview of an opened table: sample rows, row errors, guessed column types and fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.tabular.guess import ColumnGuess, FieldGuess, column_type, guess_fields
from server.tabular.model import Row, RowError, Table

__all__ = ["Preview", "preview"]


@dataclass(frozen=True)
class Preview:
    """What :func:`preview` saw: ``rows`` are the first ``sample`` rows; types, errors and
    ``rows_scanned`` come from the first ``scan`` rows; ``complete`` says the scan reached the end.
    """

    columns: list[str]
    types: dict[str, ColumnGuess]
    fields: list[FieldGuess]
    rows: list[Row]
    errors: list[RowError]
    rows_scanned: int
    complete: bool
    blank_rows: int = 0
    skipped_lines: list[int] = field(default_factory=list)


def preview(table: Table, sample: int = 10, scan: int = 1000, max_errors: int = 50) -> Preview:
    """Read up to ``scan`` rows of ``table`` (consuming them) and summarise them."""
    rows: list[Row] = []
    errors: list[RowError] = []
    values: dict[str, list[str]] = {name: [] for name in table.columns}
    scanned = 0
    complete = True
    for item in table.rows:
        if scanned >= scan:
            complete = False
            break
        scanned += 1
        if isinstance(item, RowError):
            if len(errors) < max_errors:
                errors.append(item)
            continue
        if len(rows) < sample:
            rows.append(item)
        for name, value in item.values.items():
            values[name].append(value)
    types = {name: column_type(values[name]) for name in table.columns}
    return Preview(
        columns=list(table.columns),
        types=types,
        fields=guess_fields(table.columns, types),
        rows=rows,
        errors=errors,
        rows_scanned=scanned,
        complete=complete,
        blank_rows=table.stats.get("blank_rows", 0),
        skipped_lines=list(table.skipped_lines),
    )
