"""The error envelope on every failure path, and the request id in header and body."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from conftest import serving
from tests_server_helpers import assert_envelope

from emailintel.dns import DnsResolver
from server.app import create_app
from server.settings import Settings


async def test_request_id_is_generated(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    assert len(request_id) == 28
    other = await client.get("/health")
    assert other.headers["x-request-id"] != request_id


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope", headers={"X-Request-Id": "trace-123.abc"})
    assert response.headers["x-request-id"] == "trace-123.abc"
    assert response.json()["error"]["request_id"] == "trace-123.abc"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "semi;colon", ""])
async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/health", headers={"X-Request-Id": bad})
    assert response.headers["x-request-id"].startswith("req_")


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    error = assert_envelope(response, 404, "invalid_request_error", "route_not_found")
    assert "/api/v1/nothing-here" in error["message"]


async def test_unknown_paid_route_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/x402/v1/email/teleport", json={})
    assert_envelope(response, 404, "invalid_request_error", "route_not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/health", "GET"),
        ("DELETE", "/api/v1/ready", "GET"),
        ("GET", "/api/x402/v1/email/validate", "POST"),
        ("PUT", "/api/x402/v1/prospects/search", "POST"),
        # a literal path beside a parametrised one: its own 405, not the sibling's 404
        ("PATCH", "/api/v1/campaigns/aggregate-stats", "GET"),
        ("DELETE", "/api/v1/datasets/list", "GET"),
        ("DELETE", "/api/v1/campaigns/aggregate-stats", "GET"),
    ],
)
async def test_wrong_method_is_405(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_envelope(response, 405, "invalid_request_error", "method_not_allowed")
    assert allow in response.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/health", "GET"),
        ("OPTIONS", "/api/x402/v1/email/validate", "POST"),
        ("TRACE", "/api/v1/webhooks", "GET, POST"),
        ("PUT", "/api/v1/campaigns/", "GET, POST"),
    ],
)
async def test_a_405_advertises_only_the_documented_methods(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_envelope(response, 405, "invalid_request_error", "method_not_allowed")
    assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),  # a UTF-16 byte-order mark and nothing else
        (b'{"tags": ["\xff"]}', "invalid_json", None),  # not UTF-8, and no byte-order mark
        (b'{"tags": ["a\xc3"]}', "invalid_json", None),  # a truncated UTF-8 sequence
        (b"\xff\xfe{\x00", "invalid_json", None),  # UTF-16 cut in the middle of a character
        (b"[" * 5000, "invalid_json", None),
        (b'{"tags": ["a"], "limit": ' + b"9" * 5000 + b"}", "invalid_json", None),
        (b'"tags"', "invalid_body", None),
        (b"[1, 2]", "invalid_body", None),
        (b"{}", "parameter_missing", "tags"),
        (b'{"tags": "saas"}', "parameter_invalid", "tags"),
        (b'{"tags": []}', "parameter_invalid", "tags"),
        (b'{"tags": ["  "]}', "parameter_invalid", "tags"),
        (b'{"tags": ["a"], "limit": 101}', "parameter_invalid", "limit"),
        (b'{"tags": ["a"], "limit": "5"}', "parameter_invalid", "limit"),
        (b'{"tags": ["a"], "offset": -1}', "parameter_invalid", "offset"),
        (b'{"tags": ["a"], "filters": {"company": 3}}', "parameter_invalid", "filters.company"),
        (b'{"tags": ["a"], "filters": {"colour": "red"}}', "parameter_unknown", "filters.colour"),
        (b'{"tags": ["a"], "sort": "name"}', "parameter_unknown", "sort"),
    ],
)
async def test_bad_bodies_are_400_with_param(
    client: httpx.AsyncClient, body: bytes, code: str, param: str | None
) -> None:
    response = await client.post(
        "/api/x402/v1/prospects/search", content=body, headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400, "invalid_request_error", code)
    assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"tags": ["ai"]}',  # a UTF-8 byte-order mark
        '{"tags": ["ai"]}'.encode("utf-16"),  # UTF-16 with its byte-order mark
        '{"tags": ["ai"]}'.encode("utf-16-le"),  # and without
    ],
)
async def test_other_unicode_encodings_are_read(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/api/x402/v1/prospects/search", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"tags": ["' + b"a" * (1 << 20) + b'"]}'
    response = await client.post("/api/x402/v1/prospects/search", content=body)
    assert_envelope(response, 413, "invalid_request_error", "body_too_large")


async def test_uncaught_exception_is_500_without_internals(
    settings: Settings, stub_resolver: DnsResolver, sqlite_url: str
) -> None:
    async with serving(create_app(settings, resolver=stub_resolver)) as c:
        path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE prospect_pool")
        response = await c.post(
            "/api/x402/v1/prospects/search", json={"tags": ["saas"]}, headers={"X-Request-Id": "r1"}
        )
    error = assert_envelope(response, 500, "api_error", "internal_error")
    assert error["request_id"] == "r1"
    assert response.headers["x-request-id"] == "r1"
    text = response.text.lower()
    assert "prospect_pool" not in text
    assert "operationalerror" not in text
    assert "traceback" not in text
