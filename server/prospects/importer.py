"""Read prospects from CSV, JSON or JSON Lines, keeping every bad row with the reasons it failed.

Reading is separate from storing: :func:`parse_file` returns the good rows and a report of the bad
ones (row number, errors, the raw row), so nothing is silently dropped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from server.prospects.models import ProspectIn

__all__ = ["ImportFileError", "ParsedFile", "RowError", "parse_file", "parse_rows", "read_rows"]

FORMATS = ("csv", "json", "jsonl")


class ImportFileError(ValueError):
    """The file as a whole cannot be read (missing, unknown format, not CSV/JSON at all)."""


@dataclass(frozen=True)
class RowError:
    """A rejected row: its 1-based number in the file (CSV: line), why, and the raw content."""

    row: int
    errors: tuple[str, ...]
    raw: Any

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready record for reports and reject files."""
        return {"row": self.row, "errors": list(self.errors), "raw": self.raw}


@dataclass
class ParsedFile:
    """The rows that validated (with their row numbers) and those that did not."""

    rows: list[tuple[int, ProspectIn]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ImportFileError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "json"):
        return suffix
    raise ImportFileError(f"cannot tell the format of {path.name!r}; pass --format csv|json|jsonl")


def _csv_rows(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(text.splitlines(keepends=True), restkey="__extra__")
    if not reader.fieldnames:
        raise ImportFileError("the CSV file has no header row")
    for record in reader:
        yield reader.line_num, record


def _json_rows(text: str) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"not valid JSON: {exc}") from None
    except RecursionError:  # nesting deeper than the interpreter allows
        raise ImportFileError("not valid JSON: nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("prospects"), list):
        data = data["prospects"]
    if not isinstance(data, list):
        raise ImportFileError('JSON must be an array of objects or {"prospects": [...]}')
    yield from enumerate(data, start=1)


def _jsonl_rows(text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, _Unparsed(line, str(exc))
        except RecursionError:
            yield number, _Unparsed(line[:200], "nested too deeply")


@dataclass(frozen=True)
class _Unparsed:
    line: str
    error: str


def read_rows(path: Path, fmt: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (row number, raw row) from a file; raises :class:`ImportFileError` if unreadable."""
    kind = _format_of(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read {str(path)!r}: {exc}") from None
    readers = {"csv": _csv_rows, "json": _json_rows, "jsonl": _jsonl_rows}
    return readers[kind](text)


def _messages(exc: ValidationError) -> tuple[str, ...]:
    out = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "row"
        out.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return tuple(out)


def parse_rows(raw_rows: Iterable[tuple[int, Any]]) -> ParsedFile:
    """Validate raw rows into :class:`ProspectIn`; bad rows go to ``errors`` with their content."""
    parsed = ParsedFile()
    for number, raw in raw_rows:
        if isinstance(raw, _Unparsed):
            parsed.errors.append(RowError(number, (f"row: not valid JSON: {raw.error}",), raw.line))
            continue
        if not isinstance(raw, dict):
            parsed.errors.append(RowError(number, ("row: must be an object",), raw))
            continue
        if raw.get("__extra__"):
            extra = {k: v for k, v in raw.items() if k != "__extra__"}
            extra["__extra__"] = raw["__extra__"]
            parsed.errors.append(RowError(number, ("row: more fields than the header",), extra))
            continue
        try:
            parsed.rows.append((number, ProspectIn.model_validate(raw).with_domain()))
        except ValidationError as exc:
            parsed.errors.append(RowError(number, _messages(exc), raw))
    return parsed


def parse_file(path: Path, fmt: str | None = None) -> ParsedFile:
    """Read and validate a whole file (see :func:`read_rows` and :func:`parse_rows`)."""
    return parse_rows(read_rows(path, fmt))
