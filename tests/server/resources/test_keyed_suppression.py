"""The suppression list over HTTP on SQLite and PostgreSQL: idempotent add, filters and
paginations, delete, CSV import (multipart and text/csv) with per-line errors, the batch check
(domains cover subdomains), every error path, ownership."""

from __future__ import annotations

import asyncio
from typing import Any

from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

from server.suppression.store import SuppressionStore

URL = "/api/v1/suppression/"
IMPORT = "/api/v1/suppression/import"
CHECK = "/api/v1/suppression/check"


async def _add(keyed: Keyed, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    made = await keyed.client.post(URL, json=body, headers=headers)
    assert made.status_code in (200, 201), made.text
    result: dict[str, Any] = made.json()
    return result


async def test_add_is_idempotent_and_normalised(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    first = await keyed.client.post(
        URL,
        json={"email": " Ann@Bücher.de ", "reason": "asked", "source": "unsubscribe"},
        headers=alice,
    )
    assert first.status_code == 201
    entry = first.json()
    assert entry["id"].startswith("sup_")
    assert (entry["kind"], entry["value"], entry["source"], entry["reason"]) == (
        "email",
        "ann@xn--bcher-kva.de",
        "unsubscribe",
        "asked",
    )
    again = await keyed.client.post(
        URL, json={"email": "ANN@xn--bcher-kva.DE", "reason": "other"}, headers=alice
    )
    assert again.status_code == 200
    assert again.json() == entry  # the existing entry, unchanged
    domain = await keyed.client.post(URL, json={"domain": "Acme.COM."}, headers=alice)
    assert domain.status_code == 201
    assert (domain.json()["kind"], domain.json()["value"], domain.json()["source"]) == (
        "domain",
        "acme.com",
        "manual",
    )
    bare = await keyed.client.post("/api/v1/suppression", json={"domain": "b.io"}, headers=alice)
    assert bare.status_code == 201


async def test_concurrent_adds_of_one_value_make_one_entry(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    responses = await asyncio.gather(
        *(keyed.client.post(URL, json={"email": "x@y.com"}, headers=alice) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_add_errors(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    cases = [
        ({}, "parameter_invalid"),
        ({"email": "a@x.com", "domain": "x.com"}, "parameter_invalid"),
        ({"email": "nope"}, "invalid_email"),
        ({"email": "a@com"}, "invalid_email"),
        ({"domain": "com"}, "invalid_domain"),
        ({"domain": "a@x.com"}, "invalid_domain"),
        ({"email": "a@x.com", "source": "api"}, "parameter_invalid"),
        ({"email": "a@x.com", "reason": "r" * 501}, "parameter_invalid"),
        ({"email": "a@x.com", "extra": 1}, "parameter_unknown"),
        ({"email": "a" * 321}, "parameter_invalid"),
    ]
    for body, code in cases:
        response = await keyed.client.post(URL, json=body, headers=alice)
        assert_envelope(response, 400, "invalid_request_error", code)
    assert (await keyed.client.get(URL, headers=alice)).json()["data"] == []


async def test_list_filters_and_paginations(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = [
        await _add(keyed, alice, email="ann@acme.com"),
        await _add(keyed, alice, domain="acme.com", source="bounce"),
        await _add(keyed, alice, email="bo_%@other.org"),
        await _add(keyed, alice, domain="other.org"),
    ]
    ids = [m["id"] for m in reversed(made)]

    async def listed(**params: Any) -> list[str]:
        response = await keyed.client.get(URL, params=params, headers=alice)
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["data"]]

    assert await listed() == ids
    assert await listed(kind="domain") == [made[3]["id"], made[1]["id"]]
    assert await listed(source="bounce") == [made[1]["id"]]
    assert await listed(search="ACME") == [made[1]["id"], made[0]["id"]]
    assert await listed(q="_%") == [made[2]["id"]]
    assert await listed(search="acme", kind="email") == [made[0]["id"]]
    assert await listed(page=2, page_size=3) == ids[3:]
    assert await listed(limit=2, offset=1) == ids[1:3]
    page = (await keyed.client.get(URL, params={"limit": 3}, headers=alice)).json()
    assert await listed(cursor=page["next_cursor"]) == ids[3:]
    for params in ({"kind": "ip"}, {"source": "x"}, {"page": 0}, {"search": "x" * 321}):
        response = await keyed.client.get(URL, params=params, headers=alice)
        assert response.status_code == 400, params


async def test_delete(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    entry = await _add(keyed, alice, email="ann@acme.com")
    url = f"/api/v1/suppression/{entry['id']}"
    assert_envelope(
        await keyed.client.delete(url, headers=bob),
        404,
        "invalid_request_error",
        "suppression_not_found",
    )
    assert (await keyed.client.delete(url, headers=alice)).status_code == 204
    assert (await keyed.client.delete(url, headers=alice)).status_code == 404
    assert (await keyed.client.delete("/api/v1/suppression/sup_x", headers=alice)).status_code == (
        404
    )
    again = await keyed.client.post(URL, json={"email": "ann@acme.com"}, headers=alice)
    assert again.status_code == 201  # re-added after the delete


async def test_check_covers_domains_and_subdomains(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    ann = await _add(keyed, alice, email="ann@mail.acme.com")
    acme = await _add(keyed, alice, domain="acme.com")
    await _add(keyed, alice, domain="eu.acme.com")
    addresses = [
        "ANN@mail.acme.com",
        "bo@acme.com",
        "cy@x.eu.acme.com",
        "di@notacme.com",
        "nonsense",
        "ed@acme.co",
    ]
    checked = await keyed.client.post(CHECK, json={"addresses": addresses}, headers=alice)
    assert checked.status_code == 200, checked.text
    rows = checked.json()["data"]
    assert [r["address"] for r in rows] == addresses
    assert [r["entry"]["id"] if r["entry"] else None for r in rows] == [
        ann["id"],
        acme["id"],
        rows[2]["entry"]["id"],
        None,
        None,
        None,
    ]
    assert rows[2]["entry"]["value"] == "eu.acme.com"  # the nearest domain wins
    assert [r["suppressed"] for r in rows] == [True, True, True, False, False, False]
    theirs = await keyed.client.post(CHECK, json={"addresses": addresses}, headers=bob)
    assert not any(r["suppressed"] for r in theirs.json()["data"])
    for body in ({"addresses": []}, {"addresses": ["a"] * 1001}, {}, {"addresses": ["a" * 321]}):
        assert (await keyed.client.post(CHECK, json=body, headers=alice)).status_code == 400


async def test_is_suppressed_batches_past_one_chunk(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    await _add(keyed, alice, domain="d1999.test")
    await _add(keyed, alice, email="a5@d5.test")
    store = SuppressionStore(keyed.services.db.engine)
    addresses = [f"a{i}@d{i}.test" for i in range(2500)]  # 5,000 lookup keys: three queries
    found = await store.is_suppressed(user_id, addresses)
    hits = {address: entry.value for address, entry in found.items() if entry is not None}
    assert hits == {"a5@d5.test": "a5@d5.test", "a1999@d1999.test": "d1999.test"}
    assert await store.is_suppressed(user_id, []) == {}


def _multipart(csv: bytes, **fields: str) -> tuple[bytes, str]:
    parts = [
        f'--BND\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        b'--BND\r\nContent-Disposition: form-data; name="file"; filename="list.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + csv + b"\r\n"
    )
    return b"".join(parts) + b"--BND--\r\n", "multipart/form-data; boundary=BND"


async def test_import_multipart_and_plain(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    await _add(keyed, alice, email="ann@acme.com")
    csv = b"Name,Email\nAnn,ANN@acme.com\nBo,bo@acme.com\nCy,not-an-address\n\nDi,bo@acme.com\n"
    body, content_type = _multipart(csv, source="bounce", reason="hard bounce")
    response = await keyed.client.post(
        IMPORT, content=body, headers={**alice, "Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "rows": 4,
        "imported": 1,
        "existing": 1,
        "repeated": 1,
        "invalid": 1,
        "errors": [
            {
                "line": 4,
                "value": "not-an-address",
                "code": "invalid_email",
                "message": "Not an email address.",
            }
        ],
        "errors_truncated": False,
    }
    bo = (await keyed.client.get(URL, params={"search": "bo@"}, headers=alice)).json()["data"]
    assert [(e["source"], e["reason"]) for e in bo] == [("bounce", "hard bounce")]
    plain = await keyed.client.post(
        IMPORT,
        content=b"acme.org\nx@y.org\nbad\n" * 1 + b"bad2\n" * 120,
        headers={**alice, "Content-Type": "text/csv"},
    )
    assert plain.status_code == 200
    result = plain.json()
    assert (result["imported"], result["invalid"], len(result["errors"])) == (2, 121, 100)
    assert result["errors_truncated"] is True
    assert [e["line"] for e in result["errors"][:3]] == [3, 4, 5]
    listed = (await keyed.client.get(URL, params={"source": "import"}, headers=alice)).json()
    assert {e["value"] for e in listed["data"]} == {"acme.org", "x@y.org"}


async def test_import_errors(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    csv_headers = {**alice, "Content-Type": "text/csv"}
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"{}", {**alice, "Content-Type": "application/json"}, 400, "unsupported_media_type"),
        (b"x", alice, 400, "unsupported_media_type"),
        (b"a,b\nc,d\n", csv_headers, 400, "csv_column_unknown"),
        (b"a@x.com\n" * 10_001, csv_headers, 413, "too_many_rows"),
        (b"a" * (1 << 20) + b"a", csv_headers, 413, "body_too_large"),
        (
            b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n--B--\r\n',
            {**alice, "Content-Type": "multipart/form-data; boundary=B"},
            400,
            "file_missing",
        ),
        (b"garbage", {**alice, "Content-Type": "multipart/form-data"}, 400, "invalid_multipart"),
    ]
    for content, headers, status, code in cases:
        response = await keyed.client.post(IMPORT, content=content, headers=headers)
        assert_envelope(response, status, "invalid_request_error", code)
    body, content_type = _multipart(b"a@x.com\n", source="api")
    bad_source = await keyed.client.post(
        IMPORT, content=body, headers={**alice, "Content-Type": content_type}
    )
    assert_envelope(bad_source, 400, "invalid_request_error", "parameter_invalid")
    long_reason = await keyed.client.post(
        IMPORT, params={"reason": "r" * 501}, content=b"a@x.com", headers=csv_headers
    )
    assert_envelope(long_reason, 400, "invalid_request_error", "parameter_invalid")
    assert (await keyed.client.get(URL, headers=alice)).json()["data"] == []


async def test_restricted_keys(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    reader = await keyed.key(alice, ["suppression:read"])
    assert (await keyed.client.get(URL, headers=reader)).status_code == 200
    denied = await keyed.client.post(URL, json={"email": "a@x.com"}, headers=reader)
    assert denied.status_code == 403
    writer = await keyed.key(alice, ["suppression:write"])
    assert (
        await keyed.client.post(URL, json={"email": "a@x.com"}, headers=writer)
    ).status_code == (201)
