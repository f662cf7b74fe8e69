"""The download writers: CSV, JSON and XLSX read back to the same cells (XLSX through
python-calamine; server.tabular's writers run in the thread pool over rows pulled from the event
loop), formula cells neutralised in CSV and Excel, never in JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from python_calamine import CalamineWorkbook

from server.datasets.export import cell_text, write_csv, write_json, write_xlsx

HEADERS = ["Email", "Name", "risk_score"]


async def _rows(rows: Sequence[Sequence[Any]]) -> AsyncIterator[Sequence[Any]]:
    for row in rows:
        yield row


async def _collect(stream: AsyncIterator[bytes]) -> tuple[bytes, int]:
    chunks = [chunk async for chunk in stream]
    return b"".join(chunks), len(chunks)


def _xlsx(data: bytes) -> list[list[Any]]:
    sheet: list[list[Any]] = (
        CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(0).to_python()
    )
    return sheet


async def test_large_outputs_come_in_many_chunks_and_read_back() -> None:
    rows = [[f"p{i}@x.test", f"Person {i}", i % 101] for i in range(20_000)]
    data, chunks = await _collect(write_csv(HEADERS, _rows(rows)))
    assert chunks > 5
    parsed = list(csv.reader(io.StringIO(data.decode())))
    assert parsed[0] == HEADERS
    assert parsed[1:] == [[e, n, str(s)] for e, n, s in rows]
    data, chunks = await _collect(write_json(HEADERS, _rows(rows)))
    assert chunks > 5
    document = json.loads(data)
    assert document["columns"] == HEADERS
    assert document["data"] == [dict(zip(HEADERS, row, strict=True)) for row in rows]
    data, chunks = await _collect(write_xlsx(HEADERS, _rows(rows)))
    assert chunks > 2
    sheet = _xlsx(data)
    assert sheet[0] == HEADERS
    assert [[e, n, int(s)] for e, n, s in sheet[1:]] == rows


async def test_formulas_are_neutralised_in_csv_and_excel_not_json() -> None:
    rows = [['=HYPERLINK("http://evil")', "+1", "-2"], ["@SUM(A1)", "\tx", "ok"]]
    data, _ = await _collect(write_csv(["=a", "b", "c"], _rows(rows)))
    parsed = list(csv.reader(io.StringIO(data.decode())))
    assert parsed == [
        ["'=a", "b", "c"],
        ['\'=HYPERLINK("http://evil")', "'+1", "'-2"],
        ["'@SUM(A1)", "'\tx", "ok"],
    ]
    sheet = _xlsx((await _collect(write_xlsx(["a", "b", "c"], _rows(rows))))[0])
    assert sheet[1] == ['\'=HYPERLINK("http://evil")', "'+1", "'-2"]
    document = json.loads((await _collect(write_json(["a", "b", "c"], _rows(rows))))[0])
    assert document["data"][0]["a"] == '=HYPERLINK("http://evil")'


async def test_cells_of_every_type() -> None:
    rows = [[None, True, 1.5, {"k": [1]}, 'x\x00y\x1f<&>"', float("nan")]]
    headers = list("abcdef")
    parsed = list(
        csv.reader(io.StringIO((await _collect(write_csv(headers, _rows(rows))))[0].decode()))
    )
    assert parsed[1] == ["", "true", "1.5", '{"k":[1]}', 'x\x00y\x1f<&>"', "nan"]
    document = json.loads((await _collect(write_json(headers, _rows(rows))))[0])
    assert document["data"][0] == {
        "a": None,
        "b": True,
        "c": 1.5,
        "d": {"k": [1]},
        "e": 'x\x00y\x1f<&>"',
        "f": None,
    }
    sheet = _xlsx((await _collect(write_xlsx(headers, _rows(rows))))[0])
    assert sheet[1][:5] == ["", "true", "1.5", '{"k":[1]}', 'x\x00y\x1f<&>"']  # text cells
    assert cell_text(2) == "2"


async def test_empty_datasets_have_a_header_row() -> None:
    assert (await _collect(write_csv(HEADERS, _rows([]))))[0] == b"Email,Name,risk_score\r\n"
    assert json.loads((await _collect(write_json(HEADERS, _rows([]))))[0]) == {
        "columns": HEADERS,
        "data": [],
    }
    assert _xlsx((await _collect(write_xlsx(HEADERS, _rows([]))))[0]) == [HEADERS]


cells = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
    max_size=30,
).filter(lambda t: not t.startswith(("=", "+", "-", "@", "\t")))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(cells, min_size=3, max_size=3), max_size=8))
async def test_csv_and_json_round_trip_any_text(rows: list[list[str]]) -> None:
    data, _ = await _collect(write_csv(HEADERS, _rows(rows)))
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed[1:] == rows
    document = json.loads((await _collect(write_json(HEADERS, _rows(rows))))[0])
    assert [[row[h] for h in HEADERS] for row in document["data"]] == rows
