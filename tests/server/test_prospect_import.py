"""Reading prospects from CSV, JSON and JSON Lines; bad rows are reported with their content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.prospects.importer import ImportFileError, parse_file, parse_rows
from server.prospects.tags import normalize_tags

CSV = """name,title,company,domain,linkedin_url,email,location,tags
Ada Lovelace,CTO,Analytical,analytical.io,https://www.linkedin.com/in/ada,ADA@Analytical.io,London,"SaaS; AI |ai"
,CEO,Nameless,,,,,saas
Grace Hopper,Admiral,Navy,,,,Arlington,
Alan Turing,Researcher,Bletchley,,https://example.com/alan,,,crypto
Bad Email,,,,,not-an-email,,saas
Too,Many,Fields,x.io,,,,a,extra
Linus,Dev,Kernel,,,linus@kernel.org,,os
"""


def test_csv_rows_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(CSV)
    parsed = parse_file(path)
    good = {row: p for row, p in parsed.rows}
    assert sorted(good) == [2, 8]
    ada = good[2]
    assert ada.tags == ("saas", "ai")
    assert ada.email == "ada@analytical.io"
    assert good[8].domain == "kernel.org"  # filled from the email
    errors = {e.row: e for e in parsed.errors}
    assert sorted(errors) == [3, 4, 5, 6, 7]
    assert errors[3].errors[0].startswith("name:")
    assert errors[4].errors[0].startswith("tags:")
    assert errors[5].errors[0].startswith("linkedin_url:")
    assert errors[6].errors[0].startswith("email:")
    assert errors[7].errors == ("row: more fields than the header",)
    assert errors[3].raw["company"] == "Nameless"  # the raw row is kept
    assert len(parsed.rows) + len(parsed.errors) == 7


def test_json_array_and_wrapped_object(tmp_path: Path) -> None:
    rows = [
        {"name": "A", "tags": ["x", "Y"]},
        {"name": "B", "tags": "y;z", "domain": "B.IO."},
        "not an object",
        {"name": "C", "tags": [1, 2]},
        {"name": "D", "tags": ["ok"], "domain": "nodot"},
    ]
    for i, payload in enumerate((rows, {"prospects": rows})):
        path = tmp_path / f"p{i}.json"
        path.write_text(json.dumps(payload))
        parsed = parse_file(path)
        assert [(n, p.tags) for n, p in parsed.rows] == [(1, ("x", "y")), (2, ("y", "z"))]
        assert parsed.rows[1][1].domain == "b.io"
        assert [e.row for e in parsed.errors] == [3, 4, 5]
        assert parsed.errors[0].raw == "not an object"


def test_jsonl_keeps_unparseable_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"name": "A", "tags": ["x"]}\n\n{broken\n{"name": "B", "tags": ["y"]}\n')
    parsed = parse_file(path)
    assert [n for n, _ in parsed.rows] == [1, 4]
    assert parsed.errors[0].row == 3
    assert parsed.errors[0].raw == "{broken"
    assert parsed.errors[0].as_json()["errors"][0].startswith("row: not valid JSON")


@pytest.mark.parametrize(
    ("name", "content", "fmt", "message"),
    [
        ("p.txt", "x", None, "cannot tell the format"),
        ("p.csv", "x", "xml", "unknown format"),
        ("p.json", "{nope", None, "not valid JSON"),
        ("p.json", '{"a": 1}', None, "must be an array"),
        ("p.csv", "", None, "no header"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, name: str, content: str, fmt: str | None, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ImportFileError, match=message):
        parse_file(path, fmt)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot read"):
        parse_file(tmp_path / "absent.csv")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
rows = st.lists(
    st.dictionaries(
        st.sampled_from(["name", "tags", "email", "domain", "linkedin_url", "title", "junk"]),
        json_values,
    )
    | json_values,
    max_size=15,
)


@given(rows)
def test_no_row_is_lost_and_parsing_never_raises(raw: list[object]) -> None:
    parsed = parse_rows(enumerate(raw, start=1))
    numbers = sorted([n for n, _ in parsed.rows] + [e.row for e in parsed.errors])
    assert numbers == list(range(1, len(raw) + 1))
    for error in parsed.errors:
        assert error.errors
        assert error.raw == raw[error.row - 1]
    for _, prospect in parsed.rows:
        assert prospect.name.strip() == prospect.name
        assert prospect.tags
        assert normalize_tags(prospect.tags) == prospect.tags


def test_deeply_nested_files_are_refused_not_a_traceback(tmp_path: Path) -> None:
    """At the server's recursion limit (1,000), deep nesting is a RecursionError in the parser."""
    import sys

    from server.recursion import restore_recursion_limit

    restore_recursion_limit()
    assert sys.getrecursionlimit() <= 1000
    whole = tmp_path / "deep.json"
    whole.write_text("[" * 5_000 + "]" * 5_000)
    with pytest.raises(ImportFileError, match="nested too deeply"):
        parse_file(whole)
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"name": "A", "tags": ["x"]}\n' + "[" * 5_000 + "]" * 5_000 + "\n")
    parsed = parse_file(lines)
    assert [n for n, _ in parsed.rows] == [1]
    assert parsed.errors[0].row == 2
    assert "nested too deeply" in parsed.errors[0].as_json()["errors"][0]
