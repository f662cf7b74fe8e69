"""The outbox as wired in the app (no stand-ins), on SQLite and PostgreSQL: only a verified
domain of the caller may send, with its own DKIM key, and suppressed recipients are refused
with the entry that suppresses them."""

from __future__ import annotations

from typing import Any

from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

SEND = "/api/v1/bavimail/emails"


async def _verified_domain(keyed: Keyed, headers: dict[str, str], name: str) -> str:
    made = await keyed.client.post("/api/v1/bavimail/domains", json={"name": name}, headers=headers)
    assert made.status_code == 201, made.text
    domain_id: str = made.json()["id"]
    me = (await keyed.client.get("/api/v1/auth/me", headers=headers)).json()
    # The DNS checks have their own lab tests; here the domain is marked verified directly.
    await keyed.services.mail.record_check(
        me["user_id"], domain_id, [], "verified", pending_ok=False
    )
    return domain_id


def _mail(sender: str, *to: str) -> dict[str, Any]:
    return {"from": sender, "to": list(to), "subject": "Hello", "text": "Hi there"}


async def test_only_the_owners_verified_domain_sends(keyed: Keyed) -> None:
    _, ann = await keyed.user()
    _, bob = await keyed.user()
    await keyed.client.post("/api/v1/bavimail/domains", json={"name": "pending.test"}, headers=ann)
    refused = await keyed.client.post(SEND, json=_mail("ann@pending.test", "x@y.test"), headers=ann)
    assert_envelope(refused, 422, "invalid_request_error", "domain_not_verified")
    await _verified_domain(keyed, ann, "acme.test")
    sent = await keyed.client.post(SEND, json=_mail("Ann <ann@acme.test>", "x@y.test"), headers=ann)
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "queued"
    assert sent.json()["message_id"].endswith("@acme.test>")
    # bob has no verified acme.test: ann's domain is not his to send from
    theirs = await keyed.client.post(SEND, json=_mail("bob@acme.test", "x@y.test"), headers=bob)
    assert_envelope(theirs, 422, "invalid_request_error", "domain_not_verified")


async def test_suppressed_recipients_are_not_sent_and_say_why(keyed: Keyed) -> None:
    _, ann = await keyed.user()
    await _verified_domain(keyed, ann, "acme.test")
    for body in ({"email": "gone@client.test"}, {"domain": "blocked.test"}):
        added = await keyed.client.post("/api/v1/suppression/", json=body, headers=ann)
        assert added.status_code == 201, added.text
    sent = await keyed.client.post(
        SEND,
        json=_mail("ann@acme.test", "gone@client.test", "eve@sub.blocked.test", "ok@client.test"),
        headers=ann,
    )
    assert sent.status_code == 202, sent.text
    suppressed = {s["address"]: s["reason"] for s in sent.json()["suppressed"]}
    assert set(suppressed) == {"gone@client.test", "eve@sub.blocked.test"}
    assert "email gone@client.test" in suppressed["gone@client.test"]
    assert "domain blocked.test" in suppressed["eve@sub.blocked.test"]
    everyone = await keyed.client.post(
        SEND, json=_mail("ann@acme.test", "gone@client.test"), headers=ann
    )
    assert everyone.status_code == 202, everyone.text  # stored, never handed over
    assert everyone.json()["status"] == "failed"
    assert everyone.json()["error"]["code"] == "all_recipients_suppressed"


async def test_a_reply_lands_in_the_sent_emails_conversation(keyed: Keyed) -> None:
    from email.message import EmailMessage

    from server.mail.inbound_smtp import Route

    user_id, ann = await keyed.user()
    await _verified_domain(keyed, ann, "acme.test")
    sent = await keyed.client.post(SEND, json=_mail("ann@acme.test", "bo@client.test"), headers=ann)
    assert sent.status_code == 202, sent.text
    listed = (await keyed.client.get("/api/v1/bavimail/conversations", headers=ann)).json()
    [thread] = listed["data"]
    assert (thread["subject"], thread["message_count"], thread["inbound_count"]) == (
        "Hello",
        1,
        0,
    )
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "bo@client.test", "ann@acme.test", "Re: Hello"
    reply["Message-ID"] = "<reply-1@client.test>"
    reply["In-Reply-To"] = sent.json()["message_id"]
    reply.set_content("Sounds good")
    answer = await keyed.services.inbound.handler().deliver(
        "bo@client.test", [Route("ann@acme.test", user_id)], reply.as_bytes()
    )
    assert answer.startswith("250"), answer
    detail = await keyed.client.get(f"/api/v1/bavimail/conversations/{thread['id']}", headers=ann)
    assert detail.status_code == 200, detail.text
    messages = detail.json()["messages"]
    assert [(m["direction"], m["id"]) for m in messages] == [
        ("outbound", sent.json()["id"]),
        ("inbound", messages[1]["id"]),
    ]
    assert messages[1]["message_id"] == "reply-1@client.test"
