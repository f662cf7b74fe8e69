"""POST /api/v1/upload/preview and /upload/excel/preview: multipart uploads of good and hostile
files; every bad file is the JSON envelope with its precise code, never a 500."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from tabular_files import xlsm_bytes, xlsx_bytes, zip_bomb
from tests_server_helpers import assert_envelope

from server.settings import load_settings

PREVIEW = "/api/v1/upload/preview"
EXCEL = "/api/v1/upload/excel/preview"
MAX = 64 * 1024


@pytest_asyncio.fixture(loop_scope="function")
async def app(tmp_path: Path) -> AsyncIterator[Keyed]:
    base = load_settings(env_file=None, database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    settings = keyed_settings(base, tmp_path, upload_max_bytes=MAX, storage_dir=tmp_path / "files")
    async with keyed_app(settings) as running:
        yield running


async def _headers(app: Keyed, scopes: list[str] | None = None) -> dict[str, str]:
    _, session = await app.user()
    return await app.key(session, scopes)


LEADS_CSV = (
    "\ufeffE-mail;Prénom;Nom;Société;Site web;LinkedIn\r\n"
    "ann@acme.test;Ann;Lee;Acme;acme.test;https://www.linkedin.com/in/annlee\r\n"
    "bob@globex.test;Bob;Ray;Globex;globex.test;https://linkedin.com/in/bob-ray\r\n"
    "bad;row;with;too;many;cells;extra\r\n"
).encode()


async def test_csv_preview_guesses_types_and_mapping(app: Keyed) -> None:
    headers = await _headers(app, ["datasets:write"])
    response = await app.client.post(
        PREVIEW, files={"file": ("leads.csv", LEADS_CSV, "text/csv")}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "csv"
    assert body["encoding"] == "utf-8-sig"
    assert body["delimiter"] == ";"
    assert body["filename"] == "leads.csv"
    assert [c["name"] for c in body["columns"]] == [
        "E-mail",
        "Prénom",
        "Nom",
        "Société",
        "Site web",
        "LinkedIn",
    ]
    types = {c["name"]: c["type"] for c in body["columns"]}
    assert types["E-mail"] == "email"
    assert types["Site web"] == "domain"
    assert types["LinkedIn"] == "linkedin_url"
    assert body["suggested_mapping"] == {
        "email": "E-mail",
        "first_name": "Prénom",
        "last_name": "Nom",
        "full_name": None,
        "company": "Société",
        "domain": "Site web",
        "linkedin": "LinkedIn",
    }
    assert all(0 < g["confidence"] <= 1 for g in body["mapping"])
    assert [r["line"] for r in body["sample_rows"]] == [2, 3]
    assert body["row_errors"] == [{"line": 4, "reason": "too_many_cells: 7 cells, 6 columns"}]
    assert body["scan_complete"] is True


async def test_xlsx_preview_and_sheet_choice(app: Keyed) -> None:
    headers = await _headers(app)
    book = xlsx_bytes(
        {
            "Notes": [["just a note"]],
            "Contacts": [
                ["Full Name", "Email", "Since"],
                ["Ann Lee", "ann@acme.test", dt.date(2024, 5, 1)],
            ],
        }
    )
    response = await app.client.post(
        PREVIEW,
        params={"sheet": "Contacts", "sample_rows": 1},
        files={"file": ("book.xlsx", book)},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kind"], body["sheet"], body["sheets"]) == (
        "xlsx",
        "Contacts",
        ["Notes", "Contacts"],
    )
    assert body["sample_rows"] == [
        {
            "line": 2,
            "values": {"Full Name": "Ann Lee", "Email": "ann@acme.test", "Since": "2024-05-01"},
        }
    ]
    assert body["suggested_mapping"]["full_name"] == "Full Name"
    assert body["suggested_mapping"]["email"] == "Email"
    missing = await app.client.post(
        PREVIEW, params={"sheet": "Nope"}, files={"file": ("book.xlsx", book)}, headers=headers
    )
    assert_envelope(missing, 400, "invalid_request_error", "sheet_not_found")


async def test_excel_preview_lists_every_sheet(app: Keyed) -> None:
    headers = await _headers(app)
    book = xlsx_bytes(
        {
            "Leads": [["Email", "Company"], ["a@b.test", "B"], ["c@d.test", "D"]],
            "Empty": [],
            "Secret": [["x"], ["1"]],
        },
        hidden=["Secret"],
    )
    response = await app.client.post(EXCEL, files={"file": ("b.xlsx", book)}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sheet_count"] == 3
    leads, empty, secret = body["sheets"]
    assert (leads["name"], leads["visible"], leads["row_count"], leads["column_count"]) == (
        "Leads",
        True,
        3,
        2,
    )
    assert leads["error"] is None
    assert leads["shape"]["suggested_mapping"]["email"] == "Email"
    assert len(leads["shape"]["sample_rows"]) == 2
    assert empty["shape"] is None
    assert empty["error"]["code"] == "no_header"
    assert secret["visible"] is False
    csv = await app.client.post(EXCEL, files={"file": ("a.csv", b"a,b\n1,2\n")}, headers=headers)
    assert_envelope(csv, 400, "invalid_request_error", "not_xlsx")


BAD_FILES = [
    (PREVIEW, "empty.csv", b"", 400, "file_empty"),
    (PREVIEW, "header-only.csv", b"   \n\n", 400, "no_header"),
    (PREVIEW, "bin.csv", b"\x00\x01\x02binary", 400, "file_binary"),
    (PREVIEW, "fake.xlsx", b"email\na@b.test\n", 400, "not_xlsx"),
    (
        PREVIEW,
        "old.xls",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100),
        400,
        "xls_not_supported",
    ),
    (PREVIEW, "macro.xlsx", xlsm_bytes(), 400, "xlsm_not_supported"),
    (PREVIEW, "bomb.xlsx", zip_bomb(), 400, "zip_bomb"),
    (PREVIEW, "big.csv", b"a\n" + b"x\n" * MAX, 413, "file_too_large"),
    (EXCEL, "macro.xlsm", xlsx_bytes({"S": [["a"]]}), 400, "xlsm_not_supported"),
    (EXCEL, "bomb.xlsx", zip_bomb(), 400, "zip_bomb"),
    (EXCEL, "empty.xlsx", b"", 400, "file_empty"),
    (EXCEL, "old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), 400, "xls_not_supported"),
]


@pytest.mark.parametrize(("path", "name", "data", "status", "code"), BAD_FILES)
async def test_bad_files_get_precise_codes(
    app: Keyed, path: str, name: str, data: bytes, status: int, code: str
) -> None:
    headers = await _headers(app)
    response = await app.client.post(path, files={"file": (name, data)}, headers=headers)
    error = assert_envelope(response, status, "invalid_request_error", code)
    assert error["param"] == "file"


async def test_malformed_requests(app: Keyed) -> None:
    headers = await _headers(app)
    as_json = await app.client.post(PREVIEW, json={"file": "a,b"}, headers=headers)
    assert_envelope(as_json, 400, "invalid_request_error", "multipart_required")
    no_file = await app.client.post(
        PREVIEW, data={"other": "x"}, files={"x": ("a.csv", b"a")}, headers=headers
    )
    assert_envelope(no_file, 400, "invalid_request_error", "file_missing")
    text_only = await app.client.post(
        PREVIEW,
        data={"file": "a,b"},
        headers={**headers, "Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert text_only.status_code == 400, text_only.text
    two = await app.client.post(
        PREVIEW,
        files=[("file", ("a.csv", b"a\n1\n")), ("file", ("b.csv", b"b\n2\n"))],
        headers=headers,
    )
    assert_envelope(two, 400, "invalid_request_error", "invalid_multipart")
    garbage = await app.client.post(
        PREVIEW,
        content=b"--zz\r\nnot a header\r\n\r\n",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert garbage.status_code == 400, garbage.text
    declared = await app.client.post(
        PREVIEW,
        content=b"x" * 10,
        headers={
            **headers,
            "Content-Type": "multipart/form-data; boundary=zz",
            "Content-Length": str(MAX * 4),
        },
    )
    assert declared.status_code == 413
    bad_sample = await app.client.post(
        PREVIEW, params={"sample_rows": "0"}, files={"file": ("a.csv", b"a\n1\n")}, headers=headers
    )
    assert_envelope(bad_sample, 400, "invalid_request_error", "parameter_invalid")


async def test_streamed_body_over_the_cap_is_413(app: Keyed) -> None:
    headers = await _headers(app)

    async def body() -> AsyncIterator[bytes]:
        yield b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        for _ in range(20):
            yield b"a,b\n" * 4096

    response = await app.client.post(
        PREVIEW,
        content=body(),
        headers={**headers, "Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert_envelope(response, 413, "invalid_request_error", "file_too_large")


async def test_scopes(app: Keyed) -> None:
    _, session = await app.user()
    reader = await app.key(session, ["datasets:read"])
    other = await app.key(session, ["jobs:write"])
    for headers in (reader, other):
        response = await app.client.post(
            PREVIEW, files={"file": ("a.csv", b"a\n1\n")}, headers=headers
        )
        assert response.status_code == 403, response.text
    anonymous = await app.client.post(PREVIEW, files={"file": ("a.csv", b"a\n1\n")})
    assert anonymous.status_code == 401
