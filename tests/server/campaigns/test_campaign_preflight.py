"""Launch checks: the pure rules (every finding, severities, per-lead detail, the cap on listed
leads) and, over HTTP on SQLite and PostgreSQL, preflight without side effects, launch refused
with the blocking findings in the envelope's detail, and the warnings."""

from __future__ import annotations

from typing import Any

from camp_api_support import URL, add_leads, make, ready, verified_alias
from factory import make_campaign
from hypothesis import given, settings
from hypothesis import strategies as st
from keyed_helpers import Keyed

from server.campaigns import preflight as pf

ALIAS = pf.AliasFact("alias_1", "ann@send.test", "verified")
OPEN = {"timezone": "UTC", "days": [0], "start": "09:00", "end": "17:00"}
STEP = [{"label": "A", "subject": "Hi {{first_name}}", "text": "x {{company|you}}"}]


def _facts(**changes: Any) -> pf.Facts:
    values: dict[str, Any] = {
        "steps": [STEP],
        "schedule": OPEN,
        "aliases": [ALIAS],
        "verified_domains": 1,
        "open_leads": 1,
    }
    values.update(changes)
    return pf.Facts(**values)


def _codes(findings: list[pf.Finding]) -> dict[str, str]:
    return {f.code: f.severity for f in findings}


def test_a_ready_campaign_has_no_findings() -> None:
    assert pf.check(_facts()) == []


def test_each_campaign_level_problem_blocks() -> None:
    assert _codes(pf.check(_facts(steps=[]))) == {"no_steps": "blocking"}
    assert _codes(pf.check(_facts(open_leads=0))) == {"no_leads": "blocking"}
    assert _codes(pf.check(_facts(aliases=[]))) == {"no_sender": "blocking"}
    assert _codes(pf.check(_facts(verified_domains=0))) == {"no_verified_domain": "blocking"}
    unknown = pf.AliasFact("alias_2", None, None)
    assert _codes(pf.check(_facts(aliases=[ALIAS, unknown]))) == {"unknown_alias": "blocking"}
    pending = pf.AliasFact("alias_3", "x@new.test", "pending")
    assert _codes(pf.check(_facts(aliases=[pending]))) == {"alias_domain_unverified": "blocking"}
    template = [{"label": "A", "template_id": "tpl_gone"}]
    found = pf.check(_facts(steps=[template], templates={"tpl_gone": None}))
    assert _codes(found) == {"template_not_found": "blocking"}


def test_schedule_windows() -> None:
    assert pf.has_window(OPEN)
    assert pf.has_window({**OPEN, "start": "22:00", "end": "06:00"})  # across midnight
    assert not pf.has_window({**OPEN, "days": []})
    assert not pf.has_window({**OPEN, "end": "09:00"})
    assert not pf.has_window({})
    found = pf.check(_facts(schedule={**OPEN, "days": []}))
    assert _codes(found) == {"no_sending_window": "blocking"}


def _hits(count: int, *emails: str) -> pf.Hits:
    return pf.Hits(count, tuple(pf.LeadDetail(f"cld_{e}", e, "why") for e in emails))


def test_lead_findings_keep_their_order_and_blocking_come_first() -> None:
    found = pf.check(
        _facts(
            open_leads=4,
            risky=_hits(1, "bo@x.test"),
            suppressed=_hits(1, "ee@x.test"),
            invalid=_hits(1, "dd@x.test"),
            missing=_hits(1, "cy@x.test"),
        )
    )
    assert [(f.code, f.severity, f.count) for f in found] == [
        ("missing_variables", "blocking", 1),
        ("invalid_addresses", "blocking", 1),
        ("suppressed_leads", "warning", 1),
        ("risky_addresses", "warning", 1),
    ]
    assert found[0].leads == (pf.LeadDetail("cld_cy@x.test", "cy@x.test", "why"),)
    assert [f.code for f in pf.blocking(found)] == ["missing_variables", "invalid_addresses"]


def test_required_names_and_a_leads_missing_detail() -> None:
    parts = pf.texts([STEP], {})
    assert parts == ["Hi {{first_name}}", "x {{company|you}}"]
    assert pf.required(parts) == ["first_name"]  # company has a fallback
    assert pf.required(["{{a}} {{b|x}}", "{{b}} {{a}}"]) == ["a", "b"]
    assert pf.missing_detail(parts, {}) == "first_name"
    assert pf.missing_detail(parts, {"First Name": "Dd"}) == ""  # folded name matches
    step = [{"label": "A", "template_id": "tpl_1"}]
    template = pf.TemplateFact("Hi", "About {{company}}", "<p>{{city}}</p>")
    parts = pf.texts([step], {"tpl_1": template})
    assert pf.missing_detail(parts, {"city": " "}) == "company, city"
    assert pf.texts([step], {"tpl_1": None}) == []


@settings(deadline=None, max_examples=30)
@given(st.integers(min_value=0, max_value=300))
def test_listed_leads_are_capped_but_counted(n: int) -> None:
    hits = pf.Hits(n, tuple(pf.LeadDetail(f"cld_{i}", f"l{i}@x.test", "x") for i in range(n)))
    found = [f for f in pf.check(_facts(missing=hits)) if f.code == "missing_variables"]
    if n == 0:
        assert not found
        return
    assert found[0].count == n
    assert len(found[0].leads) == min(n, pf.MAX_LEAD_DETAILS)


async def test_preflight_reports_everything_and_changes_nothing(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    empty = await make(keyed, alice, steps=[], schedule={"days": []})
    url = f"{URL}{empty['id']}"
    checked = await keyed.client.post(f"{url}/launch-preflight", headers=alice)
    assert checked.status_code == 200, checked.text
    body = checked.json()
    assert body["ready"] is False
    assert {f["code"] for f in body["findings"]} == {
        "no_steps",
        "no_verified_domain",
        "no_sender",
        "no_sending_window",
        "no_leads",
    }
    assert body["blocking"] == 5
    after = (await keyed.client.get(url, headers=alice)).json()
    assert after == empty  # no side effects
    refused = await keyed.client.post(f"{url}/launch", headers=alice)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "launch_blocked"
    assert {f["code"] for f in error["detail"]} == {f["code"] for f in body["findings"]}
    assert all(f["severity"] == "blocking" for f in error["detail"])
    assert (await keyed.client.get(url, headers=alice)).json()["status"] == "draft"


async def test_lead_level_findings_over_http(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    url = f"{URL}{campaign['id']}"
    suppressed = await keyed.client.post(
        "/api/v1/suppression/", json={"email": "cy@client.test"}, headers=alice
    )
    assert suppressed.status_code == 201
    await add_leads(keyed, alice, campaign["id"], [{"email": "zoe.lane@mailinator.com"}])
    body = (await keyed.client.post(f"{url}/launch-preflight", headers=alice)).json()
    assert body["ready"] is True
    assert body["leads_to_start"] == 3
    warnings = {f["code"]: f for f in body["findings"]}
    assert set(warnings) == {"suppressed_leads", "risky_addresses"}
    assert [d["email"] for d in warnings["suppressed_leads"]["leads"]] == ["cy@client.test"]
    assert warnings["risky_addresses"]["leads"][0]["detail"] == "disposable"
    listed = (await keyed.client.get(f"{url}/launch-warnings", headers=alice)).json()
    assert [f["code"] for f in listed["warnings"]] == [f["code"] for f in body["findings"]]
    # a step whose variable most leads lack, with no fallback, blocks the launch
    patched = await keyed.client.patch(
        url,
        json={"steps": [{"variants": [{"label": "A", "subject": "{{first_name}}", "text": "t"}]}]},
        headers=alice,
    )
    assert patched.status_code == 200
    refused = await keyed.client.post(f"{url}/launch", headers=alice)
    assert refused.status_code == 409
    [missing] = refused.json()["error"]["detail"]
    assert missing["code"] == "missing_variables"
    assert missing["count"] == 2
    assert {d["email"] for d in missing["leads"]} == {"cy@client.test", "zoe.lane@mailinator.com"}
    # warnings do not block: with the fallback back, the launch goes and reports them
    fixed = await keyed.client.patch(
        url,
        json={
            "steps": [{"variants": [{"label": "A", "subject": "{{first_name|Hi}}", "text": "t"}]}]
        },
        headers=alice,
    )
    assert fixed.status_code == 200
    launched = await keyed.client.post(f"{url}/launch", headers=alice)
    assert launched.status_code == 200, launched.text
    assert {f["code"] for f in launched.json()["warnings"]} == {
        "suppressed_leads",
        "risky_addresses",
    }


async def test_aliases_templates_and_invalid_stored_leads(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    domain_id, alias_id = await verified_alias(keyed, alice)
    template = await keyed.client.post(
        "/api/v1/templates/", json={"name": "t", "body_text": "Hi {{city}}"}, headers=alice
    )
    template_id = template.json()["id"]
    ids = await make_campaign(
        keyed.services.db,
        user_id=user_id,
        sender_alias_ids=[alias_id, "alias_" + "0" * 26],
        leads=[{"email": "not an address"}, {"email": "ok@client.test", "city": "Oslo"}],
    )
    url = f"{URL}{ids.campaign_id}"
    patched = await keyed.client.patch(
        url,
        json={"steps": [{"variants": [{"label": "A", "template_id": template_id}]}]},
        headers=alice,
    )
    assert patched.status_code == 200, patched.text
    body = (await keyed.client.post(f"{url}/launch-preflight", headers=alice)).json()
    codes = {f["code"]: f for f in body["findings"]}
    assert set(codes) == {"unknown_alias", "missing_variables", "invalid_addresses"}
    assert codes["missing_variables"]["leads"][0]["detail"] == "city"
    assert codes["invalid_addresses"]["leads"][0]["email"] == "not an address"
    # the domain falls back to pending: its alias no longer sends
    await keyed.services.mail.record_check(user_id, domain_id, [], "not_verified", pending_ok=False)
    await keyed.client.delete(f"/api/v1/templates/{template_id}", headers=alice)
    body = (await keyed.client.post(f"{url}/launch-preflight", headers=alice)).json()
    codes = {f["code"]: f for f in body["findings"]}
    assert {"alias_domain_unverified", "no_verified_domain", "template_not_found"} <= set(codes)
