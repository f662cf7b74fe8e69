"""From raw records to a table (pure): header-row detection, header names, ragged rows.

Rules (the same for CSV and xlsx):

- The header is the first record among the first :data:`LOOKAHEAD` whose non-empty cells number at
  least half the most common width; blank and title lines before it are skipped and reported.
- Header names are stripped; an empty one becomes ``column_<n>`` (1-based position), a repeated
  one ``name_2``, ``name_3``… (never colliding with another header).
- A row with fewer cells than columns is padded with ``""``; extra cells that are empty are
  dropped (trailing delimiters); extra non-empty cells make the row a ``too_many_cells`` error.
- A blank row (every cell empty or whitespace) carries no data: skipped and counted in
  ``stats["blank_rows"]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from server.tabular.model import Limits, Row, RowError, TabularError

__all__ = ["LOOKAHEAD", "Record", "assemble", "header_names"]

LOOKAHEAD = 25
Record = tuple[int, list[str]] | RowError
"""A raw record: (line, cells), or a record the parser could not read."""


def _width(cells: list[str]) -> int:
    return sum(1 for cell in cells if cell.strip())


def header_names(cells: list[str], limits: Limits) -> list[str]:
    """Unique, non-empty column names from a header row."""
    if len(cells) > limits.max_columns:
        raise TabularError(
            "too_many_columns",
            f"The header has {len(cells)} columns; at most {limits.max_columns} are accepted.",
        )
    raw = [cell.strip() for cell in cells]
    for name in raw:
        if len(name) > limits.max_header_chars:
            raise TabularError(
                "header_too_long",
                f"A header cell has {len(name)} characters; at most "
                f"{limits.max_header_chars} are accepted.",
            )
    taken = {name for name in raw if name}
    names: list[str] = []
    used: set[str] = set()
    for position, name in enumerate(raw, start=1):
        base = name or f"column_{position}"
        candidate, n = base, 1
        while candidate in used or (candidate != name and candidate in taken):
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        names.append(candidate)
    return names


def _pick_header(buffered: list[Record]) -> int:
    widths = [_width(r[1]) for r in buffered if not isinstance(r, RowError)]
    common = [w for w in widths if w]
    if not common:
        return -1
    counts = Counter(common)
    mode = max(counts, key=lambda w: (counts[w], w))
    floor = max(1, (mode + 1) // 2)
    for index, record in enumerate(buffered):
        if not isinstance(record, RowError) and _width(record[1]) >= floor:
            return index
    return -1


def assemble(
    records: Iterable[Record], limits: Limits, stats: dict[str, int]
) -> tuple[list[str], int, list[int], Iterator[Row | RowError]]:
    """(columns, header line, skipped lines, rows) from raw records; TabularError
    ``no_header`` when no record has a non-empty cell."""
    source = iter(records)
    buffered: list[Record] = []
    for record in source:
        buffered.append(record)
        if len(buffered) >= LOOKAHEAD:
            break
    index = _pick_header(buffered)
    if index < 0:
        raise TabularError("no_header", "The file has no header row (every line is blank).")
    header = buffered[index]
    assert not isinstance(header, RowError)
    columns = header_names(header[1], limits)
    skipped = [r.line if isinstance(r, RowError) else r[0] for r in buffered[:index]]

    def chained() -> Iterator[Record]:
        yield from buffered[index + 1 :]
        yield from source

    return columns, header[0], skipped, _rows(chained(), columns, limits, stats)


def _rows(
    records: Iterator[Record], columns: list[str], limits: Limits, stats: dict[str, int]
) -> Iterator[Row | RowError]:
    width = len(columns)
    count = errors = 0
    for record in records:
        if isinstance(record, RowError):
            item: Row | RowError = record
        else:
            line, cells = record
            if not _width(cells):
                stats["blank_rows"] = stats.get("blank_rows", 0) + 1
                continue
            item = _row(line, cells, columns, width, limits)
        count += 1
        if count > limits.max_rows:
            raise TabularError(
                "too_many_rows",
                f"The file has more than {limits.max_rows} data rows.",
                too_large=True,
            )
        if isinstance(item, RowError):
            errors += 1
            if errors > limits.max_row_errors:
                raise TabularError(
                    "too_many_row_errors",
                    f"More than {limits.max_row_errors} rows could not be read.",
                )
        yield item


def _row(
    line: int, cells: list[str], columns: list[str], width: int, limits: Limits
) -> Row | RowError:
    if len(cells) > width:
        if any(cell.strip() for cell in cells[width:]):
            return RowError(line, f"too_many_cells: {len(cells)} cells, {width} columns")
        cells = cells[:width]
    for position, cell in enumerate(cells):
        if len(cell) > limits.max_cell_chars:
            return RowError(
                line,
                f"cell_too_large: column {columns[position]!r} has {len(cell)} characters "
                f"(at most {limits.max_cell_chars})",
            )
    values = dict(zip(columns, cells, strict=False))
    for name in columns[len(cells) :]:
        values[name] = ""
    return Row(line, values)
