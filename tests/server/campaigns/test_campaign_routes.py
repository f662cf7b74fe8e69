"""Campaigns over HTTP on SQLite and PostgreSQL: create, get, list (status, search, both
paginations), update (frozen fields, optimistic version), delete (refused while active), the
lifecycle (launch, pause, resume, cancel) and every error path."""

from __future__ import annotations

from typing import Any

from camp_api_support import INLINE_STEP, URL, add_leads, make, ready, verified_alias
from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

from server.campaigns.store import CampaignStore


async def test_create_get_and_defaults(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await make(
        keyed,
        alice,
        name="  Spring  ",
        steps=[
            INLINE_STEP,
            {
                "delay_seconds": 86400,
                "variants": [
                    {"label": "A", "weight": 3, "subject": "Re", "html": "<p>x</p>"},
                    {"label": "B", "template_id": "tpl_" + "0" * 26},
                ],
            },
        ],
        schedule={"timezone": "Europe/Paris", "days": [0, 2], "start": "08:30", "end": "18:00"},
        daily_cap=50,
    )
    assert made["id"].startswith("cmp_")
    assert made["name"] == "Spring"
    assert made["status"] == "draft"
    assert made["sending"] is False
    assert made["holds"] == []
    assert made["version"] == 1
    assert made["total_leads"] == 0
    assert [s["position"] for s in made["steps"]] == [0, 1]
    assert made["steps"][1]["variants"][1]["template_id"] == "tpl_" + "0" * 26
    assert made["schedule"] == {
        "timezone": "Europe/Paris",
        "days": [0, 2],
        "start": "08:30",
        "end": "18:00",
        "min_gap_seconds": 0,
        "jitter_seconds": 0,
    }
    assert made["daily_cap"] == 50
    assert made["stop_on_reply"] is True
    got = await keyed.client.get(f"{URL}{made['id']}", headers=alice)
    assert got.json() == made
    no_slash = await keyed.client.post("/api/v1/campaigns", json={"name": "x"}, headers=alice)
    assert no_slash.status_code == 201
    assert no_slash.json()["steps"] == []
    assert no_slash.json()["schedule"]["days"] == [0, 1, 2, 3, 4]


async def test_invalid_bodies_are_400s(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"schedule": {"timezone": "Mars/Olympus"}}, "parameter_invalid", "schedule.timezone"),
        ({"schedule": {"days": [1, 1]}}, "parameter_invalid", "schedule.days"),
        ({"schedule": {"days": [7]}}, "parameter_invalid", "schedule.days.0"),
        ({"schedule": {"start": "24:00"}}, "parameter_invalid", "schedule.start"),
        ({"steps": [{"variants": []}]}, "parameter_invalid", "steps.0.variants"),
        (
            {"steps": [{"delay_seconds": -1, "variants": [{}]}]},
            "parameter_invalid",
            "steps.0.delay_seconds",
        ),
        (
            {"steps": [{"variants": [{"label": "A"}, {"label": "A"}]}]},
            "duplicate_variant_label",
            "steps.0.variants",
        ),
        ({"sender_alias_ids": ["nope"]}, "parameter_invalid", "sender_alias_ids.0"),
        ({"daily_cap": 0}, "parameter_invalid", "daily_cap"),
        ({"colour": "red"}, "parameter_unknown", "colour"),
    ]
    for extra, code, param in cases:
        response = await keyed.client.post(URL, json={"name": "x", **extra}, headers=alice)
        error = assert_envelope(response, 400, "invalid_request_error", code)
        assert error["param"] == param, (extra, error)
    missing = await keyed.client.post(URL, json={}, headers=alice)
    assert assert_envelope(missing, 400, "invalid_request_error", "parameter_missing")["param"] == (
        "name"
    )
    listed = await keyed.client.get(URL, headers=alice)
    assert listed.json()["data"] == []  # nothing was created


async def test_search_folds_case_beyond_ascii(keyed: Keyed) -> None:
    """Unicode case folding on both backends, at creation and after a rename."""
    _, alice = await keyed.user()
    ete = await make(keyed, alice, name="Été à Zürich")
    street = await make(keyed, alice, name="Große Straße")
    await make(keyed, alice, name="plain")

    async def found(search: str) -> list[str]:
        got = await keyed.client.get(URL, params={"search": search}, headers=alice)
        return [c["id"] for c in got.json()["data"]]

    assert await found("ÉTÉ À ZÜRICH") == [ete["id"]]
    assert await found("zürich") == [ete["id"]]
    assert await found("STRASSE") == [street["id"]]  # ß folds to ss
    assert await found("große") == [street["id"]]
    assert await found("ete") == []  # folding is not accent stripping
    renamed = await keyed.client.patch(
        f"{URL}{street['id']}", json={"name": "ΣΟΦΊΑ", "version": street["version"]}, headers=alice
    )
    assert renamed.status_code == 200, renamed.text
    assert await found("σοφία") == [street["id"]]
    assert await found("straße") == []


async def test_list_filters_and_both_paginations(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    ids = [(await make(keyed, alice, name=f"Wave {n} 50%_off"))["id"] for n in range(5)]
    await make(keyed, alice, name="other")
    store = CampaignStore(keyed.services.db.engine)
    user_id = (await keyed.client.get("/api/v1/auth/me", headers=alice)).json()["user_id"]
    assert await store.transition(user_id, ids[0], "cancel") is not None
    searched = await keyed.client.get(URL, params={"search": "wave", "limit": 100}, headers=alice)
    assert [c["id"] for c in searched.json()["data"]] == ids[::-1]
    like = await keyed.client.get(URL, params={"search": "%_off"}, headers=alice)
    assert len(like.json()["data"]) == 5  # % and _ are literal
    cancelled = await keyed.client.get(URL, params={"status": "cancelled"}, headers=alice)
    assert [c["id"] for c in cancelled.json()["data"]] == [ids[0]]
    seed_name = await keyed.client.get(URL, params={"status_filter": "draft"}, headers=alice)
    assert len(seed_name.json()["data"]) == 5
    first = (await keyed.client.get(URL, params={"limit": 2}, headers=alice)).json()
    assert first["has_more"] is True
    second = (
        await keyed.client.get(
            URL, params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice
        )
    ).json()
    by_offset = (
        await keyed.client.get(URL, params={"limit": 2, "offset": 2}, headers=alice)
    ).json()
    assert [c["id"] for c in second["data"]] == [c["id"] for c in by_offset["data"]]
    assert [c["id"] for c in second["data"]] == ids[::-1][1:3]
    paged = (await keyed.client.get(URL, params={"page": 2, "page_size": 2}, headers=alice)).json()
    assert paged["data"] == by_offset["data"]
    bad = await keyed.client.get(URL, params={"status": "running"}, headers=alice)
    assert_envelope(bad, 400, "invalid_request_error", "parameter_invalid")
    bad_cursor = await keyed.client.get(URL, params={"cursor": "zz"}, headers=alice)
    assert_envelope(bad_cursor, 400, "invalid_request_error", "cursor_invalid")
    _, bob = await keyed.user()
    assert (await keyed.client.get(URL, headers=bob)).json()["data"] == []


async def test_update_in_draft_replaces_steps_and_checks_the_version(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await make(keyed, alice)
    url = f"{URL}{made['id']}"
    two = [INLINE_STEP, {**INLINE_STEP, "delay_seconds": 60}]
    patched = await keyed.client.patch(
        url, json={"steps": two, "name": " New ", "version": 1, "daily_cap": 5}, headers=alice
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["version"] == 2
    assert body["name"] == "New"
    assert [s["delay_seconds"] for s in body["steps"]] == [0, 60]
    assert body["daily_cap"] == 5
    cleared = await keyed.client.patch(url, json={"daily_cap": None}, headers=alice)
    assert cleared.json()["daily_cap"] is None
    assert cleared.json()["name"] == "New"  # omitted fields stay
    stale = await keyed.client.patch(url, json={"name": "x", "version": 1}, headers=alice)
    error = assert_envelope(stale, 409, "invalid_request_error", "version_conflict")
    assert error["param"] == "version"
    assert "version 3" in error["message"]
    null_name = await keyed.client.patch(url, json={"name": None}, headers=alice)
    assert_envelope(null_name, 400, "invalid_request_error", "parameter_invalid")
    dup = await keyed.client.patch(
        url, json={"steps": [{"variants": [{"label": "B"}, {"label": "B"}]}]}, headers=alice
    )
    assert_envelope(dup, 400, "invalid_request_error", "duplicate_variant_label")
    assert (await keyed.client.get(url, headers=alice)).json()["version"] == 3


async def test_lifecycle_launch_pause_resume_cancel_delete(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    url = f"{URL}{campaign['id']}"
    for action in ("pause", "resume"):
        early = await keyed.client.post(f"{url}/{action}", headers=alice)
        assert_envelope(early, 409, "invalid_request_error", "campaign_state")
    launched = await keyed.client.post(f"{url}/launch", headers=alice)
    assert launched.status_code == 200, launched.text
    result = launched.json()
    assert result["campaign"]["status"] == "active"
    assert result["campaign"]["sending"] is True
    assert result["campaign"]["launched_at"] is not None
    assert result["leads_started"] == 2
    assert result["campaign"]["lead_counts"] == {"active": 2}
    leads = (await keyed.client.get(f"{url}/leads", headers=alice)).json()["data"]
    assert {lead["status"] for lead in leads} == {"active"}
    assert all(lead["due_at"] is not None and lead["next_step_index"] == 0 for lead in leads)
    again = await keyed.client.post(f"{url}/launch", headers=alice)
    assert_envelope(again, 409, "invalid_request_error", "campaign_state")
    busy = await keyed.client.delete(url, headers=alice)
    assert_envelope(busy, 409, "invalid_request_error", "campaign_active")
    frozen = await keyed.client.patch(
        url, json={"steps": [INLINE_STEP], "requires_approval": True, "name": "x"}, headers=alice
    )
    error = assert_envelope(frozen, 409, "invalid_request_error", "fields_frozen")
    assert "requires_approval, steps" in error["message"]
    allowed = await keyed.client.patch(
        url, json={"schedule": {"days": [1]}, "name": "Still going"}, headers=alice
    )
    assert allowed.status_code == 200
    assert allowed.json()["schedule"]["days"] == [1]
    paused = await keyed.client.post(f"{url}/pause", headers=alice)
    assert paused.json()["status"] == "paused"
    assert paused.json()["sending"] is False
    version = paused.json()["version"]
    twice = await keyed.client.post(f"{url}/pause", headers=alice)
    assert twice.status_code == 200
    assert twice.json()["version"] == version  # idempotent: nothing changed
    leads_paused = (await keyed.client.get(f"{url}/leads", headers=alice)).json()["data"]
    assert [lead["due_at"] for lead in leads_paused] == [lead["due_at"] for lead in leads]
    resumed = await keyed.client.post(f"{url}/resume", headers=alice)
    assert resumed.json()["status"] == "active"
    assert (await keyed.client.post(f"{url}/resume", headers=alice)).status_code == 200
    cancelled = await keyed.client.post(f"{url}/cancel", headers=alice)
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    for action in ("pause", "resume", "launch"):
        late = await keyed.client.post(f"{url}/{action}", headers=alice)
        assert_envelope(late, 409, "invalid_request_error", "campaign_state")
    ended = await keyed.client.patch(url, json={"schedule": {"days": [2]}}, headers=alice)
    assert (
        "schedule"
        in assert_envelope(ended, 409, "invalid_request_error", "fields_frozen")["message"]
    )
    closed = await keyed.client.post(
        f"{url}/leads", json={"leads": [{"email": "dd@client.test"}]}, headers=alice
    )
    assert_envelope(closed, 409, "invalid_request_error", "campaign_closed")
    gone = await keyed.client.delete(url, headers=alice)
    assert gone.status_code == 204
    assert_envelope(
        await keyed.client.get(url, headers=alice),
        404,
        "invalid_request_error",
        "campaign_not_found",
    )
    assert_envelope(
        await keyed.client.delete(url, headers=alice),
        404,
        "invalid_request_error",
        "campaign_not_found",
    )


async def test_delete_cascades_to_leads_and_paused_campaigns_may_go(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    url = f"{URL}{campaign['id']}"
    assert (await keyed.client.post(f"{url}/launch", headers=alice)).status_code == 200
    assert (await keyed.client.post(f"{url}/pause", headers=alice)).status_code == 200
    assert (await keyed.client.delete(url, headers=alice)).status_code == 204
    from sqlalchemy import func, select

    from server.db.models import CampaignLead, CampaignStep

    async with keyed.services.db.engine.connect() as conn:
        for table in (CampaignLead, CampaignStep):
            left = await conn.execute(
                select(func.count()).select_from(table).where(table.campaign_id == campaign["id"])
            )
            assert left.scalar_one() == 0


async def test_malformed_and_unknown_ids_are_404(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    for path in ("cmp_nope", "cmp_" + "0" * 26, "tpl_" + "0" * 26):
        response = await keyed.client.get(f"{URL}{path}", headers=alice)
        assert_envelope(response, 404, "invalid_request_error", "campaign_not_found")


async def test_restricted_keys_need_the_campaigns_scope(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    reader = await keyed.key(alice, ["campaigns:read"])
    other = await keyed.key(alice, ["templates:write"])
    made = await make(keyed, alice)
    assert (await keyed.client.get(f"{URL}{made['id']}", headers=reader)).status_code == 200
    refused = await keyed.client.post(URL, json={"name": "x"}, headers=reader)
    assert refused.status_code == 403
    assert (await keyed.client.get(URL, headers=other)).status_code == 403
    writer = await keyed.key(alice, ["campaigns:write"])
    assert (await keyed.client.post(f"{URL}{made['id']}/pause", headers=writer)).status_code == 409
    added = await add_leads(keyed, writer, made["id"], [{"email": "ee@client.test"}])
    assert added["added"] == 1


async def test_system_holds_show_apart_from_the_state(keyed: Keyed) -> None:
    from factory import make_campaign

    user_id, alice = await keyed.user()
    hold = {"code": "daily_cap", "detail": {"sent": 50, "cap": 50}, "since": 1000.0}
    ids = await make_campaign(keyed.services.db, user_id=user_id, status="active", holds=[hold])
    got = (await keyed.client.get(f"{URL}{ids.campaign_id}", headers=alice)).json()
    assert got["status"] == "active"
    assert got["holds"] == [hold]
    assert got["sending"] is False
    paused = await keyed.client.post(f"{URL}{ids.campaign_id}/pause", headers=alice)
    assert paused.json()["holds"] == [hold]  # the user's move leaves the system's holds alone


async def test_a_launched_campaign_cannot_take_another_users_alias(keyed: Keyed) -> None:
    """After launch no check runs on a PATCH: its sender_alias_ids must be the caller's own
    (another user's alias, or none, is a 404 naming it) and the campaign keeps its aliases."""
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    _, bobs_alias = await verified_alias(keyed, bob, domain="bob.test", local="bob")
    campaign = await ready(keyed, alice)
    url = f"{URL}{campaign['id']}"
    assert (await keyed.client.post(f"{url}/launch", headers=alice)).status_code == 200
    mine = campaign["sender_alias_ids"][0]
    for foreign in (bobs_alias, "alias_" + "0" * 26):
        taken = await keyed.client.patch(
            url, json={"sender_alias_ids": [mine, foreign]}, headers=alice
        )
        error = assert_envelope(taken, 404, "invalid_request_error", "alias_not_found")
        assert error["param"] == "sender_alias_ids.1"
    after = (await keyed.client.get(url, headers=alice)).json()
    assert after["sender_alias_ids"] == [mine]
    kept = await keyed.client.patch(url, json={"sender_alias_ids": [mine]}, headers=alice)
    assert kept.status_code == 200, kept.text
