"""Uploads into a session over HTTP on SQLite and PostgreSQL: CSV (Windows-1252, ';', a ragged
row reported with its line), Excel with several sheets, sender profile and data fields, the
stored file removed with the session, refusals (xlsm, zip bomb, not multipart), ownership; and
download round trip of an upload through the session's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keyed_helpers import Keyed
from tabular_files import xlsm_bytes, xlsx_bytes, zip_bomb
from tests_server_helpers import assert_envelope

V1 = "/api/v1/sessions"
Headers = dict[str, str]


async def _session(app: Keyed, headers: Headers) -> str:
    made = await app.client.post(f"{V1}/create", json={"sender_data": {"a": 1}}, headers=headers)
    assert made.status_code == 201, made.text
    sid: str = made.json()["id"]
    return sid


async def _upload(
    app: Keyed,
    headers: Headers,
    sid: str,
    kind: str,
    name: str,
    data: bytes,
    fields: dict[str, str] | None = None,
) -> Any:
    return await app.client.post(
        f"{V1}/{sid}/upload/{kind}",
        files={"file": (name, data)},
        data=fields or {},
        headers=headers,
    )


async def test_csv_upload_with_rejections_and_sender_fields(keyed: Keyed, tmp_path: Path) -> None:
    _, alice = await keyed.user(credits=10)
    sid = await _session(keyed, alice)
    made = await keyed.client.post("/api/v1/sender-profiles/", json={"name": "p"}, headers=alice)
    assert made.status_code == 201, made.text
    profile = made.json()["id"]
    text = "Email;Name;Société\r\nann@acme.test;Ann Lee;Café\r\nbo@acme.test;Bo;X;extra\r\n"
    text += "cy@acme.test;Cy Doe;Z\r\n"
    response = await _upload(
        keyed,
        alice,
        sid,
        "csv",
        "leads.csv",
        text.encode("cp1252"),
        {
            "sender_data": '{"b": 2}',
            "sender_profile_id": profile,
            "sender_columns": "Société",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["added"], body["row_count"], body["kind"]) == (2, 2, "csv")
    assert len(body["rejected"]) == 1
    assert body["rejected"][0]["line"] == 3
    assert body["rejected"][0]["reason"].startswith("too_many_cells")
    assert body["tables"][0]["columns"] == ["Email", "Name", "Société"]
    session = (await keyed.client.get(f"{V1}/{sid}/status", headers=alice)).json()
    assert session["row_count"] == 2
    results = (await keyed.client.get(f"{V1}/{sid}/results", headers=alice)).json()
    assert [(r["line"], r["data"]["Société"]) for r in results["data"]] == [(2, "Café"), (4, "Z")]
    # sender data merged, profile recorded
    view = await keyed.client.post(
        f"{V1}/{sid}/sender-data", json={"sender_data": {}}, headers=alice
    )
    assert view.json()["sender_data"] == {"a": 1, "b": 2}
    assert view.json()["sender_profile_id"] == profile
    stored = list((tmp_path / "files" / "uploads" / sid).iterdir())
    assert len(stored) == 1
    # a second upload appends; processing guesses the Email column
    again = await _upload(keyed, alice, sid, "csv", "more.csv", b"Email\nd@acme.test\n")
    assert again.json()["row_count"] == 3
    # the session's delete removes its stored files
    assert (await keyed.client.delete(f"{V1}/{sid}", headers=alice)).status_code == 200
    assert not (tmp_path / "files" / "uploads" / sid).exists()


async def test_excel_upload_sheets(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    sid = await _session(keyed, alice)
    book = xlsx_bytes(
        {
            "People": [["Email", "Name"], ["ann@acme.test", "Ann"], ["bo@acme.test", "Bo"]],
            "More": [["Email", "Title"], ["cy@acme.test", "CTO"]],
            "Empty": [],
        }
    )
    first = await _upload(keyed, alice, sid, "excel", "book.xlsx", book)
    assert first.status_code == 200, first.text
    assert [t["sheet"] for t in first.json()["tables"]] == ["People"]
    assert first.json()["added"] == 2
    both = await _upload(keyed, alice, sid, "excel", "book.xlsx", book, {"sheets": "More,People"})
    assert both.status_code == 200, both.text
    assert [(t["sheet"], t["added"]) for t in both.json()["tables"]] == [("More", 1), ("People", 2)]
    assert both.json()["row_count"] == 5
    results = (await keyed.client.get(f"{V1}/{sid}/results", headers=alice)).json()
    assert results["columns"] == ["Email", "Name", "Title"]
    missing = await _upload(keyed, alice, sid, "excel", "book.xlsx", book, {"sheets": "Nope"})
    assert_envelope(missing, 400, "invalid_request_error", "sheet_not_found")
    empty = await _upload(keyed, alice, sid, "excel", "book.xlsx", book, {"sheets": "all"})
    assert empty.status_code == 400
    assert empty.json()["error"]["code"] == "no_header"


async def test_upload_refusals_and_ownership(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    sid = await _session(keyed, alice)
    cases: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
        ("excel", "m.xlsm", xlsm_bytes(), {}, 400, "xlsm_not_supported"),
        ("excel", "b.xlsx", zip_bomb(), {}, 400, "zip_bomb"),
        (
            "excel",
            "x.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100),
            {},
            400,
            "xls_not_supported",
        ),
        ("csv", "e.csv", b"", {}, 400, "file_empty"),
        ("csv", "a.csv", b"Email\na@b.test\n", {"sender_data": "[1]"}, 400, "parameter_invalid"),
        (
            "csv",
            "a.csv",
            b"Email\na@b.test\n",
            {"sender_profile_id": "x"},
            400,
            "parameter_invalid",
        ),
    ]
    for kind, name, data, fields, status, code in cases:
        response = await _upload(keyed, alice, sid, kind, name, data, fields)
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["code"] == code, (name, response.text)
    not_form = await keyed.client.post(f"{V1}/{sid}/upload/csv", json={}, headers=alice)
    assert_envelope(not_form, 400, "invalid_request_error", "multipart_required")
    for kind in ("csv", "excel"):
        other = await _upload(keyed, bob, sid, kind, "a.csv", b"Email\na@b.test\n")
        assert_envelope(other, 404, "invalid_request_error", "session_not_found")
    foreign = await keyed.client.post("/api/v1/sender-profiles/", json={"name": "b"}, headers=bob)
    theirs = {"sender_profile_id": foreign.json()["id"]}
    refused = await _upload(keyed, alice, sid, "csv", "a.csv", b"Email\na@b.test\n", theirs)
    assert_envelope(refused, 404, "invalid_request_error", "sender_profile_not_found")
    created = await keyed.client.post(f"{V1}/create", json=theirs, headers=alice)
    assert_envelope(created, 404, "invalid_request_error", "sender_profile_not_found")
    status = (await keyed.client.get(f"{V1}/{sid}/status", headers=alice)).json()
    assert status["row_count"] == 0
