"""POST /api/x402/v1/email/validate: against the NSD DNS lab, and on the stub resolver."""

from __future__ import annotations

import httpx
import pytest
from tests_server_helpers import assert_envelope

from emailintel.dns import DnsResolver
from emailintel.verify import Validator

PATH = "/api/x402/v1/email/validate"


async def test_valid_domain_matches_the_library(
    lab_client: httpx.AsyncClient, lab_resolver: DnsResolver
) -> None:
    response = await lab_client.post(PATH, json={"email": "Jane.Doe@multi.test"})
    assert response.status_code == 200, response.text
    body = response.json()
    direct = await Validator(resolver=lab_resolver).validate("Jane.Doe@multi.test")
    assert body["risk_level"] == direct.verdict.value == body["verdict"]
    assert body["score"] == direct.score
    assert body["reasons"] == [r.value for r in direct.reasons]
    assert body["mx_hosts"] == ["mx1.multi.test", "mx2.multi.test"]  # by preference
    assert body["risk_level"] != "invalid"
    assert body["domain"] == "multi.test"


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("not an address", "syntax_invalid"),
        ("a@@b.test", "syntax_invalid"),
        ("someone@nullmx.test", "null_mx"),
        ("someone@absent.test", "domain_not_found"),
    ],
)
async def test_bad_addresses_are_answered_invalid(
    client: httpx.AsyncClient, email: str, reason: str
) -> None:
    response = await client.post(PATH, json={"email": email})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["risk_level"] == "invalid"
    assert reason in body["reasons"]
    assert body["mx_hosts"] == []


async def test_typo_suggestion_is_passed_through(client: httpx.AsyncClient) -> None:
    body = (await client.post(PATH, json={"email": "jane@gmial.com"})).json()
    assert body["suggestion"] == "jane@gmail.com"


@pytest.mark.parametrize(
    ("content", "code", "param"),
    [
        (b'{"email": ', "invalid_json", None),
        (b'"jane@acme.test"', "invalid_body", None),
        (b"{}", "parameter_missing", "email"),
        (b'{"email": 42}', "parameter_invalid", "email"),
        (b'{"email": null}', "parameter_invalid", "email"),
        (b'{"email": "a@acme.test", "extra": 1}', "parameter_unknown", "extra"),
    ],
)
async def test_malformed_requests_are_400(
    client: httpx.AsyncClient, content: bytes, code: str, param: str | None
) -> None:
    response = await client.post(PATH, content=content)
    error = assert_envelope(response, 400, "invalid_request_error", code)
    assert error["param"] == param
