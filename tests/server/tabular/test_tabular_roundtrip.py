"""Properties: what the writers write, the reader reads back (CSV, xlsx), and the guesses and
neutralisation rules hold for any input."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.tabular import (
    Row,
    RowError,
    TabularError,
    column_type,
    csv_chunks,
    json_chunks,
    neutralise,
    open_table,
    value_type,
    xlsx_chunks,
)

# Cells as a spreadsheet holds them: printable text, no leading formula character (the CSV
# writer would neutralise it), no surrounding spaces (header names are stripped), no NUL.
_CELL = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff"),
    max_size=30,
).filter(lambda s: not s.startswith(("=", "+", "-", "@")))
_HEADER = _CELL.map(str.strip).filter(bool)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    columns = draw(st.lists(_HEADER, min_size=1, max_size=6, unique=True))
    rows = draw(
        st.lists(
            st.lists(_CELL, min_size=len(columns), max_size=len(columns)).filter(
                lambda r: any(c.strip() for c in r)  # a blank row is skipped by design
            ),
            max_size=15,
        )
    )
    return columns, rows


def _read(data: bytes, name: str) -> tuple[list[str], list[list[str]]]:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / name
        path.write_bytes(data)
        with open_table(path, name) as table:
            items = list(table.rows)
            assert all(isinstance(item, Row) for item in items), items
            rows = [
                [item.values[c] for c in table.columns] for item in items if isinstance(item, Row)
            ]
            return table.columns, rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.booleans())
def test_csv_round_trip(table: tuple[list[str], list[list[str]]], bom: bool) -> None:
    columns, rows = table
    data = b"".join(csv_chunks(columns, rows, bom=bom))
    got_columns, got_rows = _read(data, "t.csv")
    assert got_columns == columns
    assert got_rows == rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_xlsx_round_trip(table: tuple[list[str], list[list[str]]]) -> None:
    columns, rows = table
    got_columns, got_rows = _read(b"".join(xlsx_chunks(columns, rows)), "t.xlsx")
    assert got_columns == columns
    # xlsx drops trailing empty cells and calamine reads "" for them: the same values
    assert got_rows == rows


@given(tables())
def test_json_round_trip(table: tuple[list[str], list[list[str]]]) -> None:
    columns, rows = table
    parsed = json.loads(b"".join(json_chunks(columns, rows)))
    assert parsed == [dict(zip(columns, row, strict=True)) for row in rows]


@given(st.text(max_size=40))
def test_neutralised_cells_never_start_a_formula(cell: str) -> None:
    safe = neutralise(cell)
    assert not safe.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert safe.removeprefix("'") == cell or safe == cell


@given(st.lists(st.text(max_size=50), max_size=30))
def test_guesses_are_total(values: list[str]) -> None:
    guess = column_type(values)
    assert 0.0 <= guess.confidence <= 1.0
    for value in values:
        kind = value_type(value)
        assert kind is None or kind in (
            "email",
            "linkedin_url",
            "url",
            "domain",
            "phone",
            "number",
            "date",
            "text",
        )


def test_formula_cells_are_neutralised_in_csv_export() -> None:
    data = b"".join(
        csv_chunks(["a", "=b"], [["=1+1", "+41 22"], ["-3", "@SUM(A1)"], ["\tx", "ok"]])
    )
    assert data.decode() == "a,'=b\r\n'=1+1,'+41 22\r\n'-3,'@SUM(A1)\r\n\"'\tx\",ok\r\n"
    assert b"".join(csv_chunks(["a"], [], bom=True)).startswith(b"\xef\xbb\xbfa\r\n")


async def test_async_chunks_stream_the_same_bytes() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from server.tabular import async_chunks

    rows = [[f"r{i}", "=x"] for i in range(5000)]
    expected = b"".join(csv_chunks(["a", "b"], rows, bom=True))
    streamed = b"".join(
        [chunk async for chunk in async_chunks(csv_chunks(["a", "b"], rows, bom=True))]
    )
    assert streamed == expected

    async def export(request: object) -> StreamingResponse:
        return StreamingResponse(
            xlsx_chunks(["a", "b"], rows), media_type="application/octet-stream"
        )

    transport = httpx.ASGITransport(app=Starlette(routes=[Route("/x", export)]))
    async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
        body = (await client.get("/x")).content
    assert body.startswith(b"PK\x03\x04")
    _, got = _read(body, "x.xlsx")
    assert got == rows


_CSVISH = st.lists(
    st.sampled_from(
        [b"a", b"\xc3\xa9", b"\xe9", b",", b";", b"\t", b"|", b'"', b"\n", b"\r", b" ", b"="]
    ),
    max_size=200,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_CSVISH, st.binary(max_size=300)), st.sampled_from(["f.csv", "f.xlsx", "f"]))
def test_any_bytes_give_rows_or_a_tabular_error(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "upload"
        path.write_bytes(data)
        try:
            with open_table(path, name) as table:
                assert table.columns
                assert len(set(table.columns)) == len(table.columns)
                for item in table.rows:
                    assert isinstance(item, (Row, RowError))
                    if isinstance(item, Row):
                        assert list(item.values) == table.columns
        except TabularError as exc:
            refused: TabularError | None = exc
        else:
            refused = None
        assert refused is None or (refused.code and refused.message)
