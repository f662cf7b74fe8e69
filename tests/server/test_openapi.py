"""openapi.json: a valid OpenAPI 3.1 document covering every route, with schemas and x402 prices."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import serving
from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts, get_spec_version

from emailintel.dns import DnsResolver
from server.app import create_app
from server.routes import operations
from server.settings import load_settings

PAY_TO = "0x1111111111111111111111111111111111111111"


def _passthrough(app: Any, routes: Any) -> Any:
    """A stand-in payment hook: with one, the wallet-paid routes are served and documented."""
    return app


async def _document(
    sqlite_url: str, resolver: DnsResolver, *, gate: bool = False, **changes: Any
) -> dict[str, Any]:
    settings = load_settings(env_file=None, database_url=sqlite_url, pay_to=PAY_TO, **changes)
    hook = _passthrough if gate else None
    async with serving(create_app(settings, resolver=resolver, payment_middleware=hook)) as c:
        response = await c.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("gate", [False, True])
async def test_document_is_valid_openapi_31(
    sqlite_url: str, stub_resolver: DnsResolver, gate: bool
) -> None:
    document = await _document(sqlite_url, stub_resolver, gate=gate)
    assert ("/api/v1/credits/purchase" in document["paths"]) is gate  # never sold unpaid
    validate(document)  # raises on any violation
    assert get_spec_version(document) == consts.OPENAPIV31


async def test_every_route_is_listed_with_schemas(
    sqlite_url: str, stub_resolver: DnsResolver
) -> None:
    document = await _document(sqlite_url, stub_resolver, gate=True)
    schemas = document["components"]["schemas"]
    assert "ErrorEnvelope" in schemas
    listed = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert listed == {(op.full_path, op.method) for op in operations()}
    for op in operations():
        entry = document["paths"][op.full_path][op.method.lower()]
        if op.status_code == 204:  # no body
            assert "content" not in entry["responses"]["204"]
        else:
            content = entry["responses"][str(op.status_code)]["content"]
            binary = getattr(op.response_model, "binary_media_type", None)
            if binary is not None:  # a download (raw message, attachment)
                assert content == {binary: {"schema": {"type": "string", "format": "binary"}}}
            else:
                ref = content["application/json"]["schema"]["$ref"]
                schema = schemas[ref.rsplit("/", 1)[1]]
                # an object, or a nullable one (the default sender profile: null when none)
                assert schema.get("type") == "object" or {"type": "null"} in schema["anyOf"]
        assert entry["responses"]["default"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"
        }
        if op.request_model is not None:
            body = entry["requestBody"]["content"][op.request_content]["schema"]["$ref"]
            assert body.rsplit("/", 1)[1] in schemas
            assert "400" in entry["responses"]
        if op.request_body is not None:  # an upload (the suppression CSV import)
            assert entry["requestBody"]["content"] == op.request_body
            assert "400" in entry["responses"]


async def test_paid_routes_carry_x402_prices(sqlite_url: str, stub_resolver: DnsResolver) -> None:
    document = await _document(
        sqlite_url,
        stub_resolver,
        gate=True,
        prices={"prospects.search": {"usd": "0.05"}, "credits.purchase": {"usd": "2.5"}},
    )
    validate_op = document["paths"]["/api/x402/v1/email/validate"]["post"]
    assert validate_op["x-x402"] == {
        "scheme": "exact",
        "price": "$0.003",
        "amount": "3000",
        "network": "eip155:8453",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "assetName": "USD Coin",
        "assetVersion": "2",
        "payTo": PAY_TO,
    }
    assert "402" in validate_op["responses"]
    search_op = document["paths"]["/api/x402/v1/prospects/search"]["post"]
    assert search_op["x-x402"]["price"] == "$0.05"
    assert search_op["x-x402"]["amount"] == "50000"
    wallet_paid = {"/api/v1/credits/purchase"}
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert ("x-x402" in op) == (path.startswith("/api/x402/") or path in wallet_paid)


async def test_buying_credits_is_both_keyed_and_paid(
    sqlite_url: str, stub_resolver: DnsResolver
) -> None:
    document = await _document(
        sqlite_url,
        stub_resolver,
        gate=True,
        prices={"credits.purchase": {"usd": "2.5", "credits": 300}},
    )
    op = document["paths"]["/api/v1/credits/purchase"]["post"]
    assert op["x-x402"]["price"] == "$2.5"
    assert op["x-x402"]["amount"] == "2500000"
    assert op["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert op["x-price-key"] == "credits.purchase"
    assert op["x-scope"] == "credits:write"
    for status in ("401", "402", "403", "429", "503"):
        assert status in op["responses"]
    assert "PAYMENT-RESPONSE" in op["responses"]["200"]["headers"]
    # The payment is the idempotency key: no Idempotency-Key parameter, no 422 for reusing one.
    assert all(p["name"] != "Idempotency-Key" for p in op.get("parameters", []))
    assert "422" not in op["responses"]


async def test_ready_documents_its_503(sqlite_url: str, stub_resolver: DnsResolver) -> None:
    document = await _document(sqlite_url, stub_resolver)
    ready = document["paths"]["/api/v1/ready"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NotReadyResponse"
    )


async def test_openapi_wrong_method(client: httpx.AsyncClient) -> None:
    response = await client.post("/openapi.json")
    assert response.status_code == 405


async def test_keyed_operations_document_their_access(
    sqlite_url: str, stub_resolver: DnsResolver
) -> None:
    """Every keyed operation names its security, scope and error answers; the key-management
    ones accept session tokens only; mutating ones take an Idempotency-Key."""
    document = await _document(sqlite_url, stub_resolver, gate=True)
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    keyed = 0
    for path, item in document["paths"].items():
        for method, op in item.items():
            access = op.get("x-access")
            if access not in ("api_key", "jwt"):
                assert "security" not in op or path.endswith("/credits/purchase"), path
                continue
            keyed += 1
            schemes = {name for entry in op["security"] for name in entry}
            assert schemes == (
                {"bearerAuth"} if access == "jwt" else {"bearerAuth", "apiKeyHeader"}
            )
            assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
            headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
            # a purchase is made idempotent by its payment (one authorization settles once)
            wanted = method != "get" and not path.endswith("/credits/purchase")
            assert ("Idempotency-Key" in headers) == wanted, (method, path)
            if path.startswith("/api/v1/api-keys"):
                assert access == "jwt"
    assert keyed >= 25
