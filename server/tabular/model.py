"""The values the readers produce and the limits that bound them (pure data)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Kind", "Limits", "Row", "RowError", "Table", "TabularError", "close_all"]

Kind = Literal["csv", "xlsx"]


class TabularError(ValueError):
    """A file this package refuses as a whole; ``code`` is stable (the API's error code).

    ``too_large`` marks the size refusals (HTTP 413 rather than 400).
    """

    def __init__(self, code: str, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.too_large = too_large


def close_all(closers: list[object]) -> None:
    """Close every object that has a ``close`` method, and forget them."""
    for closer in closers:
        close = getattr(closer, "close", None)
        if close is not None:
            close()
    closers.clear()


@dataclass(frozen=True)
class Limits:
    """Bounds on what a reader accepts; every one is checked, none silently truncates."""

    max_bytes: int = 50 * 1024 * 1024
    """Size of the uploaded file."""
    max_columns: int = 500
    max_cell_chars: int = 32_767
    """Excel's own cell limit; a longer cell is a row error."""
    max_row_chars: int = 1024 * 1024
    """One physical CSV line (an unterminated quote cannot swallow the file)."""
    max_rows: int = 1_000_000
    """Data rows (beyond the header); more is a ``too_many_rows`` error while iterating."""
    max_row_errors: int = 10_000
    """Row errors before the whole file is refused (``too_many_row_errors``)."""
    max_header_chars: int = 256
    max_zip_entries: int = 10_000
    max_uncompressed_bytes: int = 512 * 1024 * 1024
    """Sum of an xlsx's declared uncompressed sizes."""
    max_compression_ratio: int = 200
    """Uncompressed/compressed of an entry over 1 MiB; more is a zip bomb."""
    max_sheets: int = 100


@dataclass(frozen=True)
class Row:
    """A data row: ``line`` is its 1-based line (CSV: the physical line it starts on; xlsx: the
    sheet's row number); ``values`` maps every column to a string (missing cells are ``""``)."""

    line: int
    values: dict[str, str]


@dataclass(frozen=True)
class RowError:
    """A row that could not be read; ``reason`` is a short code and detail (``too_many_cells:
    7 cells, 5 columns``)."""

    line: int
    reason: str


@dataclass
class Table:
    """An opened table: its columns and a one-pass iterator of rows and row errors.

    ``header_line`` is the line of the header row (earlier blank or title lines are listed in
    ``skipped_lines``); ``blank_rows`` counts blank data rows skipped so far while iterating.
    """

    kind: Kind
    columns: list[str]
    rows: Iterator[Row | RowError]
    header_line: int
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    sheets: list[str] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: {"blank_rows": 0})
    _closers: list[object] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Release the open file behind ``rows`` (also done when iteration ends)."""
        close_all(self._closers)

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
