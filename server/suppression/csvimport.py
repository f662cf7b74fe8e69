"""The suppression CSV import (pure): the file out of a multipart or plain body, and its rows
read into normalised values with a per-line error for every row that is not one.

A file is one column of addresses and domains, or has a header row naming the column:
``email`` (also ``email_address``, ``e-mail``, ``address``), ``domain``, or ``value``. Under
``email`` every value must be an address, under ``domain`` a domain; otherwise either. Blank
rows are skipped; values repeated in the file are counted once.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from server.suppression.normalise import (
    InvalidValue,
    normalise,
    normalise_domain,
    normalise_email,
)

__all__ = [
    "MAX_REPORTED_ERRORS",
    "MAX_ROWS",
    "CsvProblem",
    "LineError",
    "Parsed",
    "file_from_body",
    "parse_csv",
]

MAX_ROWS = 10_000
"""Data rows per import (a larger file is refused whole)."""
MAX_REPORTED_ERRORS = 100
_HEADERS = {
    "email": "email",
    "email_address": "email",
    "e-mail": "email",
    "address": "email",
    "domain": "domain",
    "value": "any",
}
_PLAIN = ("text/csv", "text/plain", "application/csv", "application/octet-stream")


class CsvProblem(ValueError):
    """The file cannot be imported at all; ``code`` says why."""

    def __init__(self, code: str, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.too_large = too_large


@dataclass(frozen=True)
class LineError:
    """A row that was not imported: its line number (1-based), the value, why."""

    line: int
    value: str
    code: str
    message: str


@dataclass
class Parsed:
    """Distinct ``(kind, value)`` pairs in file order, per-line errors, and counts."""

    values: list[tuple[str, str]] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    rows: int = 0
    repeated: int = 0


def _text_part(message: Message) -> str:
    payload = message.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def file_from_body(content_type: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The CSV bytes and the other form fields (``source``, ``reason``) of a request body:
    ``multipart/form-data`` (the part named ``file``, else the first with a filename) or a
    plain ``text/csv`` body. CsvProblem for another media type or a form without a file."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PLAIN:
        return body, {}
    if media != "multipart/form-data":
        raise CsvProblem(
            "unsupported_media_type", "Send multipart/form-data with a file, or text/csv."
        )
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise CsvProblem("invalid_multipart", "The multipart body is malformed.")
    data: bytes | None = None
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        if name == "file" or (data is None and filename is not None):
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
        elif isinstance(name, str) and name in ("source", "reason") and name not in fields:
            fields[name] = _text_part(part).strip()
    if data is None:
        raise CsvProblem("file_missing", "The form has no file (a part named file).")
    return data, fields


def _column(first: list[str]) -> tuple[int, str] | None:
    """(index, kind) of the header's value column, or None when the row is no header."""
    names = [cell.strip().lower() for cell in first]
    for header, kind in _HEADERS.items():
        if header in names:
            return names.index(header), kind
    return None


def parse_csv(data: bytes) -> Parsed:
    """The values and per-line errors of a CSV file (undecodable bytes become U+FFFD and fail
    as values); CsvProblem for an unknown column layout or more than :data:`MAX_ROWS` rows."""
    text = data.decode("utf-8-sig", "replace").replace("\x00", "\ufffd")
    reader = csv.reader(io.StringIO(text, newline=""))
    parsed = Parsed()
    seen: set[str] = set()
    column, kind = 0, "any"
    first = True

    def fail(line: int, value: str, code: str, message: str) -> None:
        parsed.error_count += 1
        if len(parsed.errors) < MAX_REPORTED_ERRORS:
            parsed.errors.append(LineError(line, value[:200], code, message))

    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            fail(reader.line_num, "", "csv_malformed", f"Malformed CSV: {str(exc)[:100]}.")
            break
        if first:
            first = False
            header = _column(row)
            if header is not None:
                column, kind = header
                continue
            if sum(1 for cell in row if cell.strip()) > 1:
                raise CsvProblem(
                    "csv_column_unknown",
                    "Send one column, or name the column email, domain or value in a header row.",
                )
        raw = row[column].strip() if column < len(row) else ""
        if not raw:
            continue
        parsed.rows += 1
        if parsed.rows > MAX_ROWS:
            raise CsvProblem("too_many_rows", f"At most {MAX_ROWS} rows.", too_large=True)
        try:
            if kind == "email":
                pair = ("email", normalise_email(raw))
            elif kind == "domain":
                pair = ("domain", normalise_domain(raw))
            else:
                pair = normalise(raw)
        except InvalidValue as exc:
            fail(reader.line_num, raw, exc.code, str(exc))
            continue
        if pair[1] in seen:
            parsed.repeated += 1
            continue
        seen.add(pair[1])
        parsed.values.append(pair)
    return parsed
