"""open_table on a table of real-world and malformed files: each gives its precise result or its
precise error code."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from tabular_files import write, xlsm_bytes, xlsx_bytes, zip_bomb, zip_bytes

from server.tabular import Limits, Row, RowError, TabularError, open_table


def read_all(
    path: Path, filename: str | None = None, **kw: object
) -> tuple[list[str], list[Row | RowError], dict[str, object]]:
    with open_table(path, filename or path.name, **kw) as table:  # type: ignore[arg-type]
        rows = list(table.rows)
        meta = {
            "encoding": table.encoding,
            "delimiter": table.delimiter,
            "header_line": table.header_line,
            "skipped": table.skipped_lines,
            "blank": table.stats["blank_rows"],
            "sheet": table.sheet,
            "sheets": table.sheets,
        }
        return table.columns, rows, meta


def values(rows: list[Row | RowError]) -> list[dict[str, str] | str]:
    return [r.values if isinstance(r, Row) else f"{r.line}:{r.reason}" for r in rows]


CSV_CASES: list[tuple[str, bytes, list[str], list[dict[str, str] | str], dict[str, object]]] = [
    (
        "utf8_bom",
        "\ufeffemail,name\r\nann@acme.test,Ann\r\n".encode(),
        ["email", "name"],
        [{"email": "ann@acme.test", "name": "Ann"}],
        {"encoding": "utf-8-sig", "delimiter": ","},
    ),
    (
        "utf8_plain",
        "name,city\nJosé,Zürich\n".encode(),
        ["name", "city"],
        [{"name": "José", "city": "Zürich"}],
        {"encoding": "utf-8"},
    ),
    (
        "cp1252",
        "name;city\nJosé;Zürich\nRenée;Köln\n".encode("cp1252"),
        ["name", "city"],
        [{"name": "José", "city": "Zürich"}, {"name": "Renée", "city": "Köln"}],
        {"encoding": "cp1252", "delimiter": ";"},
    ),
    (
        "utf16_bom",
        "a\tb\r\n1\t2\r\n".encode("utf-16"),
        ["a", "b"],
        [{"a": "1", "b": "2"}],
        {"encoding": "utf-16", "delimiter": "\t"},
    ),
    (
        "semicolon_with_commas_in_cells",
        b"name;note\nAnn;one, two, three\nBob;four, five\n",
        ["name", "note"],
        [{"name": "Ann", "note": "one, two, three"}, {"name": "Bob", "note": "four, five"}],
        {"delimiter": ";"},
    ),
    (
        "tab",
        b"a\tb\tc\n1\t2\t3\n",
        ["a", "b", "c"],
        [{"a": "1", "b": "2", "c": "3"}],
        {"delimiter": "\t"},
    ),
    ("pipe", b"a|b\n1|2\n", ["a", "b"], [{"a": "1", "b": "2"}], {"delimiter": "|"}),
    (
        "quoted_newlines",
        b'name,address,zip\nAnn,"1 Main St\nSpringfield",12345\nBob,"x",9\n',
        ["name", "address", "zip"],
        [
            {"name": "Ann", "address": "1 Main St\nSpringfield", "zip": "12345"},
            {"name": "Bob", "address": "x", "zip": "9"},
        ],
        {},
    ),
    (
        "duplicate_and_empty_headers",
        b"email,Email,email,,name,\n1,2,3,4,5,6\n",
        ["email", "Email", "email_2", "column_4", "name", "column_6"],
        [
            {
                "email": "1",
                "Email": "2",
                "email_2": "3",
                "column_4": "4",
                "name": "5",
                "column_6": "6",
            }
        ],
        {},
    ),
    (
        "duplicate_header_colliding",
        b"a,a,a_2\n1,2,3\n",
        ["a", "a_3", "a_2"],
        [{"a": "1", "a_3": "2", "a_2": "3"}],
        {},
    ),
    (
        "formulas_kept_as_text",
        b'name,calc\nAnn,=1+2\nBob,"=HYPERLINK(""http://x"")"\n',
        ["name", "calc"],
        [{"name": "Ann", "calc": "=1+2"}, {"name": "Bob", "calc": '=HYPERLINK("http://x")'}],
        {},
    ),
    (
        "ragged_rows",
        b"a,b,c\n1,2\n1,2,3,,\n1,2,3,4\n",
        ["a", "b", "c"],
        [
            {"a": "1", "b": "2", "c": ""},
            {"a": "1", "b": "2", "c": "3"},
            "4:too_many_cells: 4 cells, 3 columns",
        ],
        {},
    ),
    (
        "title_rows_before_header",
        b"Export of contacts,,\n,,\nemail,first,last\na@b.test,A,B\n\n,,\nc@d.test,C,D\n",
        ["email", "first", "last"],
        [
            {"email": "a@b.test", "first": "A", "last": "B"},
            {"email": "c@d.test", "first": "C", "last": "D"},
        ],
        {"header_line": 3, "skipped": [1, 2], "blank": 2},
    ),
    ("header_only", b"email,name\n", ["email", "name"], [], {}),
    ("no_trailing_newline", b"x,y\n1,2", ["x", "y"], [{"x": "1", "y": "2"}], {}),
    ("single_column", b"email\na@b.test\n", ["email"], [{"email": "a@b.test"}], {}),
]


@pytest.mark.parametrize(
    ("data", "columns", "rows", "meta"),
    [case[1:] for case in CSV_CASES],
    ids=[case[0] for case in CSV_CASES],
)
def test_csv_files(
    tmp_path: Path,
    data: bytes,
    columns: list[str],
    rows: list[dict[str, str] | str],
    meta: dict[str, object],
) -> None:
    got_columns, got_rows, got_meta = read_all(write(tmp_path / "f.csv", data))
    assert got_columns == columns
    assert values(got_rows) == rows
    for key, expected in meta.items():
        assert got_meta[key] == expected, key


def test_row_lines_count_physical_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", b'a,b\n1,"x\ny"\n2,z\n')
    _, rows, _ = read_all(path)
    assert [r.line for r in rows] == [2, 4]


REFUSED: list[tuple[str, str, bytes, str]] = [
    ("empty", "f.csv", b"", "file_empty"),
    ("blank_lines_only", "f.csv", b"\n\n  \n", "no_header"),
    ("binary_nul", "f.csv", b"a,b\n\x00\x01\x02\x03", "file_binary"),
    (
        "png_as_csv",
        "f.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "file_binary",
    ),
    ("undecodable", "f.csv", b"a,b\n\x81\x8d\x8f,\x90\x9d\n", "file_encoding_unknown"),
    (
        "control_chars",
        "f.csv",
        bytes([1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16]) * 20,
        "file_binary",
    ),
    ("csv_named_xlsx", "f.xlsx", b"email,name\na@b.test,A\n", "not_xlsx"),
    ("zip_not_xlsx", "f.xlsx", zip_bytes({"readme.txt": b"hello"}), "not_xlsx"),
    ("truncated_zip", "f.xlsx", xlsx_bytes({"S": [["a"]]})[:200], "not_xlsx"),
    (
        "xls_by_name",
        "f.xls",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512,
        "xls_not_supported",
    ),
    (
        "xls_named_xlsx",
        "f.xlsx",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512,
        "xls_not_supported",
    ),
    ("xlsm_by_name", "f.xlsm", xlsx_bytes({"S": [["a"]]}), "xlsm_not_supported"),
    ("xlsm_named_xlsx", "f.xlsx", xlsm_bytes(), "xlsm_not_supported"),
    ("zip_bomb", "f.xlsx", zip_bomb(), "zip_bomb"),
    ("xlsb", "f.xlsb", b"PK\x03\x04", "xlsb_not_supported"),
    ("ods", "f.ods", b"PK\x03\x04", "ods_not_supported"),
]


@pytest.mark.parametrize(
    ("filename", "data", "code"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused_files(tmp_path: Path, filename: str, data: bytes, code: str) -> None:
    with pytest.raises(TabularError) as caught:
        read_all(write(tmp_path / filename, data), filename)
    assert caught.value.code == code
    assert caught.value.message


def test_too_big_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", b"a,b\n" + b"1,2\n" * 1000)
    with pytest.raises(TabularError) as caught:
        read_all(path, limits=Limits(max_bytes=1000))
    assert (caught.value.code, caught.value.too_large) == ("file_too_large", True)


def test_zip_declared_size_and_entry_limits(tmp_path: Path) -> None:
    book = write(tmp_path / "f.xlsx", xlsx_bytes({"S": [["a"], ["b"]]}))
    with pytest.raises(TabularError) as caught:
        read_all(book, limits=Limits(max_zip_entries=3))
    assert caught.value.code == "zip_too_many_entries"
    with pytest.raises(TabularError) as caught:
        read_all(book, limits=Limits(max_uncompressed_bytes=1000))
    assert (caught.value.code, caught.value.too_large) == ("zip_uncompressed_too_large", True)


def test_corrupt_zip_entry_is_refused(tmp_path: Path) -> None:
    data = bytearray(xlsx_bytes({"S": [["a", "b"], ["1", "2"]] * 50}))
    marker = data.find(b"xl/worksheets/sheet1.xml")  # the local header's name
    start = marker + len(b"xl/worksheets/sheet1.xml") + 5
    data[start : start + 20] = bytes(20)
    with pytest.raises(TabularError) as caught:
        read_all(write(tmp_path / "f.xlsx", bytes(data)))
    assert caught.value.code in ("xlsx_corrupt", "not_xlsx")


def test_limits_on_columns_rows_cells_and_lines(tmp_path: Path) -> None:
    wide = write(tmp_path / "w.csv", ",".join(f"c{i}" for i in range(20)).encode() + b"\n")
    with pytest.raises(TabularError) as caught:
        read_all(wide, limits=Limits(max_columns=10))
    assert caught.value.code == "too_many_columns"

    many = write(tmp_path / "m.csv", b"a\n" + b"x\n" * 11)
    with pytest.raises(TabularError) as caught:
        read_all(many, limits=Limits(max_rows=10))
    assert (caught.value.code, caught.value.too_large) == ("too_many_rows", True)

    big_cell = write(tmp_path / "c.csv", b"a,b\n1," + b"y" * 50 + b"\n2,ok\n")
    _, rows, _ = read_all(big_cell, limits=Limits(max_cell_chars=40))
    assert values(rows) == [
        "2:cell_too_large: column 'b' has 50 characters (at most 40)",
        {"a": "2", "b": "ok"},
    ]

    long_line = write(tmp_path / "l.csv", b'a,b\n1,"' + b"z" * 5000)
    with pytest.raises(TabularError) as caught:
        read_all(long_line, limits=Limits(max_row_chars=1000))
    assert caught.value.code == "line_too_long"

    bad = write(tmp_path / "e.csv", b"a\n" + b"1,2\n" * 5)
    with pytest.raises(TabularError) as caught:
        read_all(bad, limits=Limits(max_row_errors=3))
    assert caught.value.code == "too_many_row_errors"

    header = write(tmp_path / "h.csv", b"a," + b"h" * 300 + b"\n")
    with pytest.raises(TabularError) as caught:
        read_all(header)
    assert caught.value.code == "header_too_long"


def test_unterminated_quote_is_a_row_error_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", b'a,b\n1,"never closed\n2,3\n')
    _, rows, _ = read_all(path)
    assert rows  # the rest of the file became one cell of row 2, or a row error: never dropped
    assert all(isinstance(r, (Row, RowError)) for r in rows)


def test_xlsx_sheets_types_and_header_detection(tmp_path: Path) -> None:
    book = xlsx_bytes(
        {
            "Hidden": [["x"], ["1"]],
            "Leads": [
                ["Lead export"],
                [],
                ["Email", "Score", "Since", "Ratio", "Active", None, "Email"],
                ["ann@acme.test", 42, dt.date(2024, 1, 31), 0.25, True, None, "=1+1"],
                [],
                ["bob@acme.test", 1e20, dt.datetime(2024, 2, 1, 13, 45), -3.0, False],
            ],
            "Empty": [],
        },
        hidden=["Hidden"],
    )
    path = write(tmp_path / "b.xlsx", book)
    columns, rows, meta = read_all(path)
    assert meta["sheet"] == "Leads"  # the first visible sheet
    assert meta["sheets"] == ["Hidden", "Leads", "Empty"]
    assert columns == ["Email", "Score", "Since", "Ratio", "Active", "column_6", "Email_2"]
    assert meta["header_line"] == 3
    assert meta["skipped"] == [1, 2]
    assert meta["blank"] == 1
    assert values(rows) == [
        {
            "Email": "ann@acme.test",
            "Score": "42",
            "Since": "2024-01-31",
            "Ratio": "0.25",
            "Active": "TRUE",
            "column_6": "",
            "Email_2": "=1+1",
        },
        {
            "Email": "bob@acme.test",
            "Score": "1e+20",
            "Since": "2024-02-01 13:45:00",
            "Ratio": "-3",
            "Active": "FALSE",
            "column_6": "",
            "Email_2": "",
        },
    ]
    assert [r.line for r in rows] == [4, 6]
    hidden_cols, hidden_rows, _ = read_all(path, sheet="Hidden")
    assert hidden_cols == ["x"]
    assert values(hidden_rows) == [{"x": "1"}]
    with pytest.raises(TabularError) as caught:
        read_all(path, sheet="Nope")
    assert caught.value.code == "sheet_not_found"
    with pytest.raises(TabularError) as caught:
        read_all(path, sheet="Empty")
    assert caught.value.code == "no_header"


def test_kind_from_content_without_a_known_suffix(tmp_path: Path) -> None:
    book = write(tmp_path / "upload.bin", xlsx_bytes({"S": [["a"], ["1"]]}))
    columns, _rows, meta = read_all(book, "upload")
    assert columns == ["a"]
    assert meta["sheet"] == "S"
    text = write(tmp_path / "upload2.bin", b"a,b\n1,2\n")
    assert read_all(text, "upload")[0] == ["a", "b"]
