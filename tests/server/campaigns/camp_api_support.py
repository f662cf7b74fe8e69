"""Helpers of the campaigns route tests: a verified sending alias, a campaign made over HTTP."""

from __future__ import annotations

from typing import Any

from keyed_helpers import Keyed

URL = "/api/v1/campaigns/"
INLINE_STEP: dict[str, Any] = {
    "delay_seconds": 0,
    "variants": [{"label": "A", "subject": "Hi {{first_name|there}}", "text": "Hello"}],
}


async def verified_alias(
    keyed: Keyed, headers: dict[str, str], domain: str = "send.test", local: str = "ann"
) -> tuple[str, str]:
    """(domain id, alias id) of an alias on a domain marked verified through the store."""
    made = await keyed.client.post(
        "/api/v1/bavimail/domains", json={"name": domain}, headers=headers
    )
    assert made.status_code == 201, made.text
    domain_id: str = made.json()["id"]
    user_id = (await keyed.client.get("/api/v1/auth/me", headers=headers)).json()["user_id"]
    await keyed.services.mail.record_check(user_id, domain_id, [], "verified", pending_ok=False)
    alias = await keyed.client.post(
        "/api/v1/bavimail/aliases",
        json={"domain_id": domain_id, "local_part": local},
        headers=headers,
    )
    assert alias.status_code == 201, alias.text
    alias_id: str = alias.json()["id"]
    return domain_id, alias_id


async def make(keyed: Keyed, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    """A campaign created over HTTP (201 checked)."""
    body = {"name": "Spring outreach", "steps": [INLINE_STEP], **fields}
    made = await keyed.client.post(URL, json=body, headers=headers)
    assert made.status_code == 201, made.text
    out: dict[str, Any] = made.json()
    return out


async def add_leads(
    keyed: Keyed, headers: dict[str, str], campaign_id: str, leads: list[dict[str, Any]]
) -> dict[str, Any]:
    """Add inline leads (``{"email": …, "data": {…}}``); returns the answer's body."""
    added = await keyed.client.post(
        f"{URL}{campaign_id}/leads", json={"leads": leads}, headers=headers
    )
    assert added.status_code in (200, 201), added.text
    out: dict[str, Any] = added.json()
    return out


async def ready(keyed: Keyed, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    """A draft that passes every launch check: a verified alias and two leads."""
    _, alias_id = await verified_alias(keyed, headers)
    campaign = await make(keyed, headers, sender_alias_ids=[alias_id], **fields)
    await add_leads(
        keyed,
        headers,
        campaign["id"],
        [{"email": "bo@client.test", "data": {"first_name": "Bo"}}, {"email": "cy@client.test"}],
    )
    return campaign
