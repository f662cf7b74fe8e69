"""CSV reading: encoding detection, delimiter sniffing, records with their line numbers.

Encoding: a UTF-8 BOM (``utf-8-sig``), a UTF-16 BOM, else UTF-8 when the whole file decodes as
UTF-8 (checked in one streaming pass), else Windows-1252. A NUL byte, many control characters or
bytes undecodable in both are refused (``file_binary``, ``file_encoding_unknown``).
The delimiter is the one of ``,`` ``;`` tab ``|`` that splits the first lines most consistently.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from server.tabular.model import Limits, RowError, TabularError
from server.tabular.shape import Record

__all__ = ["DELIMITERS", "detect_encoding", "records", "sniff_delimiter"]

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 64 * 1024
_CHUNK = 256 * 1024
_CONTROL = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r", "\f"}


def _scan(handle: BinaryIO, encoding: str) -> bool:
    """Whether the whole stream decodes in ``encoding`` (constant memory)."""
    handle.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        while chunk := handle.read(_CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    finally:
        handle.seek(0)
    return True


def detect_encoding(handle: BinaryIO) -> str:
    """The text encoding of a seekable binary stream (see the module docstring)."""
    handle.seek(0)
    sample = handle.read(SAMPLE_BYTES)
    handle.seek(0)
    if sample.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        if b"\x00" in sample:
            raise TabularError("file_binary", "The file is binary, not CSV text.")
        encoding = "utf-8" if _scan(handle, "utf-8") else "cp1252"
    if not _scan(handle, encoding):
        raise TabularError(
            "file_encoding_unknown",
            "The file is neither UTF-8 (with or without BOM), UTF-16 nor Windows-1252 text.",
        )
    text = sample.decode(encoding, errors="ignore")
    if "\x00" in text or sum(ch in _CONTROL for ch in text) > max(8, len(text) // 100):
        raise TabularError("file_binary", "The file is binary, not CSV text.")
    return encoding


def _field_counts(text: str, delimiter: str) -> list[int]:
    lines = text.splitlines(keepends=True)
    if len(lines) > 1:
        lines = lines[:-1]  # the sample may cut the last line
    reader = csv.reader(io.StringIO("".join(lines[:60])), delimiter=delimiter)
    counts: list[int] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                counts.append(len(row))
    except csv.Error:
        pass
    return counts


def sniff_delimiter(text: str) -> str:
    """The delimiter (of :data:`DELIMITERS`) that splits the sample's records into the most
    records of one common width above 1; ``,`` when none splits anything."""
    best, best_score = ",", (0, 0, 0)
    for rank, delimiter in enumerate(DELIMITERS):
        counts = _field_counts(text, delimiter)
        tally = Counter(c for c in counts if c > 1)
        if not tally:
            continue
        width, agreeing = max(tally.items(), key=lambda item: (item[1], item[0]))
        score = (agreeing, width, -rank)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _lines(text: io.TextIOBase, limits: Limits) -> Iterator[str]:
    """Physical lines, each at most ``max_row_chars`` (``line_too_long`` beyond)."""
    while True:
        line = text.readline(limits.max_row_chars + 1)
        if not line:
            return
        if len(line) > limits.max_row_chars:
            raise TabularError(
                "line_too_long",
                f"A line exceeds {limits.max_row_chars} characters (an unterminated quote?).",
            )
        yield line


def records(path: Path, limits: Limits, closers: list[object]) -> tuple[str, str, Iterator[Record]]:
    """(encoding, delimiter, raw records) of a CSV file; the file is closed at the end."""
    handle = path.open("rb")
    closers.append(handle)
    try:
        encoding = detect_encoding(handle)
        sample = handle.read(SAMPLE_BYTES).decode(encoding, errors="replace")
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    delimiter = sniff_delimiter(sample)
    text = io.TextIOWrapper(handle, encoding=encoding, newline="")
    closers.append(text)

    def iterate() -> Iterator[Record]:
        try:
            reader = csv.reader(_lines(text, limits), delimiter=delimiter, strict=False)
            last = 0
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield RowError(last + 1, f"malformed_csv: {exc}")
                    last = reader.line_num
                    continue
                yield (last + 1, cells)
                last = reader.line_num
        finally:
            text.close()

    return encoding, delimiter, iterate()
