"""Every resource belongs to its owner: walk every keyed route of the OpenAPI document with two
users; another user's id is a 404 on every route, and no list shows another user's rows.

A keyed route with a path parameter this walk cannot make a resource for fails the test, so a new
resource group must teach the walk how to create one (``FACTORIES``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from keyed_helpers import Keyed
from mail_support import install
from tests_server_helpers import assert_envelope

from server.datasets.store import DatasetStore, NewRow

Headers = dict[str, str]
Factory = Callable[[Keyed, Headers], Awaitable[str]]


async def _api_key(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post("/api/v1/api-keys", json={"name": "alice's"}, headers=session)
    assert made.status_code == 201
    key_id: str = made.json()["id"]
    return key_id


async def _job(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/email-finder/verify", json={"email": "ann@acme.test"}, headers=session
    )
    assert made.status_code == 202, made.text
    job_id: str = made.json()["job_id"]
    return job_id


async def _lead_batch(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/lead-finder/batch",
        json={"names": [{"name": "Ann Lee", "company": "Acme"}]},
        headers=session,
    )
    assert made.status_code == 202, made.text
    job_id: str = made.json()["job_id"]
    return job_id


async def _mail_domain(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/bavimail/domains", json={"name": "tenant.test"}, headers=session
    )
    if made.status_code == 409:  # made for an earlier route of the walk
        listed = await keyed.client.get("/api/v1/bavimail/domains", headers=session)
        found: str = listed.json()["data"][0]["id"]
        return found
    assert made.status_code == 201, made.text
    domain_id: str = made.json()["id"]
    return domain_id


async def _mail_alias(keyed: Keyed, session: Headers) -> str:
    """An alias on a domain marked verified through the store (the walk needs ids, not DNS)."""
    domain_id = await _mail_domain(keyed, session)
    me = (await keyed.client.get("/api/v1/auth/me", headers=session)).json()
    await keyed.services.mail.record_check(
        me["user_id"], domain_id, [], "verified", pending_ok=False
    )
    made = await keyed.client.post(
        "/api/v1/bavimail/aliases",
        json={"domain_id": domain_id, "local_part": "walk"},
        headers=session,
    )
    if made.status_code == 409:
        listed = await keyed.client.get("/api/v1/bavimail/aliases", headers=session)
        found: str = listed.json()["data"][0]["id"]
        return found
    assert made.status_code == 201, made.text
    alias_id: str = made.json()["id"]
    return alias_id


async def _session(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post("/api/v1/sessions/create", json={}, headers=session)
    assert made.status_code == 201, made.text
    session_id: str = made.json()["id"]
    return session_id


async def _extraction(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/user-extractions/",
        json={"title": "t", "source": "LinkedIn", "leads": [{"email": "ann@acme.test"}]},
        headers=session,
    )
    assert made.status_code == 201, made.text
    extraction_id: str = made.json()["extraction"]["id"]
    return extraction_id


async def _template(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/templates/", json={"name": "t", "body_text": "Hi {{name}}"}, headers=session
    )
    assert made.status_code == 201, made.text
    template_id: str = made.json()["id"]
    return template_id


async def _suppression(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/suppression/", json={"email": "ann@acme.test"}, headers=session
    )
    assert made.status_code in (200, 201), made.text
    entry_id: str = made.json()["id"]
    return entry_id


async def _sender_profile(keyed: Keyed, session: Headers) -> str:
    """The user's first profile (made once: a user holds at most five)."""
    listed = await keyed.client.get("/api/v1/sender-profiles/", headers=session)
    if listed.json()["data"]:
        first: str = listed.json()["data"][0]["id"]
        return first
    made = await keyed.client.post("/api/v1/sender-profiles/", json={"name": "p"}, headers=session)
    assert made.status_code == 201, made.text
    profile_id: str = made.json()["id"]
    return profile_id


async def _prompt(keyed: Keyed, session: Headers) -> str:
    profile_id = await _sender_profile(keyed, session)
    made = await keyed.client.post(
        f"/api/v1/sender-profiles/{profile_id}/prompts",
        json={"name": "intro", "content": "Be brief."},
        headers=session,
    )
    assert made.status_code in (201, 409), made.text
    return "intro"


async def _inbound_email(keyed: Keyed, session: Headers) -> str:
    from email.message import EmailMessage

    from server.mail.inbound_smtp import Route

    user_id = (await keyed.client.get("/api/v1/auth/me", headers=session)).json()["user_id"]
    mid = f"<{user_id[-12:]}.{len(await _inbound_ids(keyed, user_id))}@client.test>"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "b@c.test", "a@acme.test", "x", mid
    msg.set_content("hello")
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
    raw = msg.as_bytes()
    reply = await keyed.services.inbound.handler().deliver(
        "bob@client.test", [Route("alice@acme.test", user_id)], raw
    )
    assert reply.startswith("250"), reply
    return (await _inbound_ids(keyed, user_id))[0]


async def _inbound_ids(keyed: Keyed, user_id: str) -> list[str]:
    rows = await keyed.services.inbound.store.list_inbound(user_id, after=None, offset=0, limit=99)
    return [row.id for row in rows]


async def _conversation(keyed: Keyed, session: Headers) -> str:
    email_id = await _inbound_email(keyed, session)
    user_id = (await keyed.client.get("/api/v1/auth/me", headers=session)).json()["user_id"]
    row = await keyed.services.inbound.store.get(user_id, email_id)
    assert row is not None
    assert row.conversation_id is not None
    return row.conversation_id


async def _attachment_index(keyed: Keyed, session: Headers) -> str:
    return "0"


async def _webhook(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/webhooks", json={"url": "https://hooks.example.com/in"}, headers=session
    )
    assert made.status_code == 201, made.text
    webhook_id: str = made.json()["id"]
    return webhook_id


async def _dataset(keyed: Keyed, session: Headers) -> str:
    """A dataset of one row, made through the store (uploads build them over HTTP)."""
    me = await keyed.client.get("/api/v1/auth/me", headers=session)
    store = DatasetStore(keyed.services.db.engine)
    made = await store.create(
        me.json()["user_id"],
        name="alice's leads",
        source_type="upload_csv",
        pipeline_type="enrichment",
        columns=["Email"],
        mapping={"email": "Email"},
    )
    await store.append(made.id, [NewRow(line=2, data={"Email": "ann@acme.test"})])
    return made.id


async def _email(keyed: Keyed, session: Headers) -> str:
    install(keyed.services)  # a test sending identity for acme.test (server.mail.ports)
    made = await keyed.client.post(
        "/api/v1/bavimail/emails",
        json={"from": "ann@acme.test", "to": "bo@company.test", "subject": "s", "text": "t"},
        headers=session,
    )
    assert made.status_code == 202, made.text
    email_id: str = made.json()["id"]
    return email_id


async def _campaign(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post("/api/v1/campaigns/", json={"name": "c"}, headers=session)
    assert made.status_code == 201, made.text
    campaign_id: str = made.json()["id"]
    return campaign_id


async def _campaign_lead(keyed: Keyed, session: Headers) -> str:
    campaign_id = await _campaign(keyed, session)
    added = await keyed.client.post(
        f"/api/v1/campaigns/{campaign_id}/leads",
        json={"leads": [{"email": "ann@acme.test"}]},
        headers=session,
    )
    assert added.status_code == 201, added.text
    leads = await keyed.client.get(f"/api/v1/campaigns/{campaign_id}/leads", headers=session)
    lead_id: str = leads.json()["data"][0]["id"]
    return lead_id


FACTORIES: dict[str, Factory] = {
    "key_id": _api_key,
    "job_id": _job,
    "session_id": _session,
    "domain_id": _mail_domain,
    "alias_id": _mail_alias,
    "extraction_id": _extraction,
    "template_id": _template,
    "entry_id": _suppression,
    "profile_id": _sender_profile,
    "name": _prompt,
    "email_id": _inbound_email,
    "conversation_id": _conversation,
    "index": _attachment_index,
    "webhook_id": _webhook,
    "dataset_id": _dataset,
    "campaign_id": _campaign,
    "campaign_lead_id": _campaign_lead,
}
"""Path parameter -> how to create such a resource as a given user (returns its id)."""

PATH_FACTORIES: dict[tuple[str, str], Factory] = {
    ("/api/v1/lead-finder/batch/{session_id}/status", "session_id"): _lead_batch,
    ("/api/v1/bavimail/emails/{email_id}", "email_id"): _email,
    ("/api/v1/bavimail/emails/{email_id}/cancel", "email_id"): _email,
    ("/api/v1/bavimail/emails/{email_id}/links", "email_id"): _email,
    ("/api/v1/bavimail/emails/{email_id}/clicks", "email_id"): _email,
}
"""(path, parameter) -> a factory where a parameter's name means another resource there (the
seed calls a lead batch's job id ``session_id``)."""

SHARED = frozenset({"domain"})
"""Path parameters naming shared knowledge, not a user's resource: a domain's learned pattern
shares aggregate every tenant's confirmed finds (no addresses, no owners)."""

_PARAM = re.compile(r"{([a-z_]+)}")


async def test_another_users_ids_are_404_on_every_keyed_route(idle: Keyed) -> None:
    keyed = idle
    document = (await keyed.client.get("/openapi.json")).json()
    _, alice = await keyed.user(credits=500)
    _, bob = await keyed.user(credits=5)
    walked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("x-access") not in ("api_key", "jwt"):
                continue
            params = _PARAM.findall(path)
            if not params or set(params) <= SHARED:
                continue
            missing = [p for p in params if p not in FACTORIES]
            assert not missing, f"{method.upper()} {path}: teach the walk to make {missing}"
            concrete = path
            for name in params:
                factory = PATH_FACTORIES.get((path, name), FACTORIES[name])
                concrete = concrete.replace("{" + name + "}", await factory(keyed, alice))
            body = {} if "requestBody" in operation else None  # ownership is checked first
            response = await keyed.client.request(method.upper(), concrete, json=body, headers=bob)
            assert response.status_code == 404, (method, path, response.text)
            assert_envelope(
                response, 404, "invalid_request_error", response.json()["error"]["code"]
            )
            walked += 1
    assert walked >= 1
    # alice's key survived bob's attempts
    keys = (await keyed.client.get("/api/v1/api-keys", headers=alice)).json()["data"]
    assert keys
    assert all(k["active"] for k in keys)


async def test_no_list_shows_another_users_rows(keyed: Keyed) -> None:
    document = (await keyed.client.get("/openapi.json")).json()
    alice_id, alice = await keyed.user(credits=7)
    _, bob = await keyed.user(credits=3)
    alice_ids = {alice_id, await _api_key(keyed, alice), await _dataset(keyed, alice)}
    txn = (await keyed.client.get("/api/v1/credits/transactions", headers=alice)).json()
    alice_ids |= {t["id"] for t in txn["data"]}
    alice_ids |= {await _template(keyed, alice), await _suppression(keyed, alice)}
    alice_ids.add(await _sender_profile(keyed, alice))
    alice_ids.add(await _campaign(keyed, alice))
    made = await keyed.client.post(
        "/api/v1/sender-profiles/", json={"name": "d", "is_default": True}, headers=alice
    )
    alice_ids.add(made.json()["id"])
    lists = 0
    for path, item in document["paths"].items():
        operation = item.get("get")
        if operation is None or operation.get("x-access") not in ("api_key", "jwt"):
            continue
        if _PARAM.search(path):
            continue
        response = await keyed.client.get(path, headers=bob)
        assert response.status_code == 200, (path, response.text)
        leaked = [i for i in alice_ids if i in response.text]
        assert not leaked, (path, leaked)
        lists += 1
    assert lists >= 5
