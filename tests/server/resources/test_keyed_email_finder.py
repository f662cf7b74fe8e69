"""Email-finder search, company patterns, stats and health (keyed, synchronous)."""

from __future__ import annotations

from pathlib import Path

import pytest
from keyed_helpers import Keyed, keyed_app, keyed_settings
from tests_server_helpers import assert_envelope

from server.prospects.models import ProspectIn
from server.settings import Settings


async def test_search_predicts_then_learns_from_confirmed_addresses(keyed: Keyed) -> None:
    _, session = await keyed.user()
    body = {"first_name": "Jane", "last_name": "Doe", "domain": "acme.test"}
    before = (
        await keyed.client.post("/api/v1/email-finder/search", json=body, headers=session)
    ).json()
    assert before["found"] is False
    assert before["source"] == "predicted"
    assert before["evidence"] == 0
    assert len(before["predictions"]) == 8
    assert before["predictions"][0]["email"] != "doe.jane@acme.test"
    # one confirmed {last}.{first} at the domain moves that pattern to the top, for anyone
    await keyed.services.known.confirm(
        "smith.bob@acme.test", "acme.test", "Bob Smith", source="find"
    )
    _, other = await keyed.user()
    after = (
        await keyed.client.post("/api/v1/email-finder/search", json=body, headers=other)
    ).json()
    assert after["evidence"] == 1
    assert after["predictions"][0]["email"] == "doe.jane@acme.test"
    company = (
        await keyed.client.get("/api/v1/email-finder/company/ACME.test", headers=other)
    ).json()
    assert company["domain"] == "acme.test"
    assert company["learned"] is True
    assert company["patterns"]["patterns"][0]["pattern"] == "{last}.{first}"
    # the confirmed owner is found in the database
    await keyed.services.known.confirm("doe.jane@acme.test", "acme.test", "Jane Doe", source="find")
    found = (
        await keyed.client.post("/api/v1/email-finder/search", json=body, headers=other)
    ).json()
    assert (found["found"], found["source"], found["email"]) == (
        True,
        "database",
        "doe.jane@acme.test",
    )
    stats = (await keyed.client.get("/api/v1/email-finder/stats", headers=other)).json()
    assert stats == {"known_addresses": 2, "domains": 1}


async def test_company_only_search_uses_the_pool(keyed: Keyed) -> None:
    await keyed.services.prospects.add(
        [
            ProspectIn(
                name="Ann Lee",
                company="Globex",
                domain="globex.example",
                email="ann@globex.example",
                tags=["x"],
            ),
            ProspectIn(name="Bo Chan", company="Globex", domain="globex.example", tags=["x"]),
        ]
    )
    _, session = await keyed.user()
    hit = await keyed.client.post(
        "/api/v1/email-finder/search",
        json={"first_name": "Ann", "last_name": "Lee", "company": "GLOBEX"},
        headers=session,
    )
    body = hit.json()
    assert (body["found"], body["source"], body["domain"]) == (True, "database", "globex.example")
    assert body["profile"]["email"] == "ann@globex.example"
    miss = await keyed.client.post(
        "/api/v1/email-finder/search",
        json={"first_name": "Ann", "last_name": "Lee", "company": "Initech"},
        headers=session,
    )
    assert (miss.json()["source"], miss.json()["domain"]) == ("unresolved", None)


@pytest.mark.parametrize(
    "body",
    [
        {"first_name": "A", "last_name": "B"},
        {"first_name": " ", "last_name": "B", "domain": "acme.test"},
        {"first_name": "A", "last_name": "B", "domain": "acme.test", "limit": 0},
        {"first_name": "A", "last_name": "B", "domain": "acme.test", "x": 1},
    ],
)
async def test_bad_searches_are_400(keyed: Keyed, body: dict[str, object]) -> None:
    _, session = await keyed.user()
    response = await keyed.client.post("/api/v1/email-finder/search", json=body, headers=session)
    assert response.status_code == 400, response.text


async def test_monthly_lookup_limit(sqlite_url: str, tmp_path: Path) -> None:
    settings = keyed_settings(
        Settings(database_url=sqlite_url),
        tmp_path,
        plans={"trial": {"monthly_lookups": 2}},
        default_plan="trial",
    )
    async with keyed_app(settings) as app:
        session = app.session("counted")
        body = {"first_name": "Jane", "last_name": "Doe", "domain": "acme.test"}
        left = [
            (await app.client.post("/api/v1/email-finder/search", json=body, headers=session))
            for _ in range(3)
        ]
        assert [r.json().get("lookups_remaining") for r in left[:2]] == [1, 0]
        error = assert_envelope(left[2], 429, "rate_limit_error", "lookup_limit_reached")
        assert "2 monthly lookups" in error["message"]
        assert int(left[2].headers["retry-after"]) > 0


async def test_unusable_domains_and_names_are_answered_unresolved(keyed: Keyed) -> None:
    _, session = await keyed.user()
    bad = await keyed.client.post(
        "/api/v1/email-finder/search",
        json={"first_name": "A", "last_name": "B", "domain": "not a domain!"},
        headers=session,
    )
    assert (bad.status_code, bad.json()["source"], bad.json()["predictions"]) == (
        200,
        "unresolved",
        [],
    )
    nameless = await keyed.client.post(
        "/api/v1/email-finder/search",
        json={"first_name": "!!!", "last_name": "???", "domain": "acme.test"},
        headers=session,
    )
    assert nameless.status_code == 200
    assert nameless.json()["predictions"] == []


async def test_company_route_refuses_non_domains_and_health(keyed: Keyed) -> None:
    _, session = await keyed.user()
    bad = await keyed.client.get("/api/v1/email-finder/company/..", headers=session)
    assert bad.status_code == 404
    priors = (
        await keyed.client.get("/api/v1/email-finder/company/new.test", headers=session)
    ).json()
    assert priors["learned"] is False
    assert abs(sum(p["percentage"] for p in priors["patterns"]["patterns"]) - 100) < 0.5
    health = (await keyed.client.get("/api/v1/email-finder/health", headers=session)).json()
    assert health["status"] == "ok"
