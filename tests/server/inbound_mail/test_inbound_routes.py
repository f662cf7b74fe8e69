"""The inbound-email and conversation routes on SQLite and PostgreSQL: the parsed record, raw
download, attachments, delete (raw file too), pagination, ownership and the bavimail scope."""

from __future__ import annotations

from email.message import EmailMessage

from inbound_helpers import message
from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

from server.mail.inbound_smtp import Route

BASE = "/api/v1/bavimail/inbound-emails"


async def _deliver(keyed: Keyed, user_id: str, raw: bytes) -> str:
    reply = await keyed.services.inbound.handler().deliver(
        "bob@client.test", [Route("ann@acme.test", user_id)], raw
    )
    assert reply.startswith("250"), reply
    rows = await keyed.services.inbound.store.list_inbound(user_id, after=None, offset=0, limit=1)
    return rows[0].id


def _with_html_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?Bj=C3=B6rn?= <bjorn@client.test>"
    msg["To"] = "ann@acme.test"
    msg["Subject"] = "Angebot"
    msg["Message-ID"] = "<html1@client.test>"
    msg.set_content("Hallo\n")
    msg.add_attachment("<script>alert(1)</script>", subtype="html", filename="../evil name.html")
    msg.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="logo.png")
    return msg.as_bytes()


async def test_get_raw_attachment_and_delete(keyed: Keyed) -> None:
    ann_id, session = await keyed.user()
    key = await keyed.key(session, ["bavimail:read", "bavimail:write"])
    email_id = await _deliver(keyed, ann_id, _with_html_attachment())

    got = await keyed.client.get(f"{BASE}/{email_id}", headers=key)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["object"] == "inbound_email"
    assert body["subject"] == "Angebot"
    assert body["sender"] == {"address": "bjorn@client.test", "name": "Björn"}
    assert body["text"] == "Hallo\n"
    assert body["message_id"] == "html1@client.test"
    assert ["Subject", "Angebot"] in body["headers"]
    assert [(a["index"], a["filename"], a["content_type"]) for a in body["attachments"]] == [
        (0, "evil name.html", "text/html"),
        (1, "logo.png", "image/png"),
    ]
    assert body["conversation_id"].startswith("cnv_")

    raw = await keyed.client.get(f"{BASE}/{email_id}/raw", headers=key)
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.content == _with_html_attachment() or b"Subject: Angebot" in raw.content

    html = await keyed.client.get(f"{BASE}/{email_id}/attachments/0", headers=key)
    assert html.status_code == 200
    assert html.content == b"<script>alert(1)</script>\n"
    assert html.headers["content-disposition"] == "attachment; filename*=UTF-8''evil%20name.html"
    assert html.headers["x-content-type-options"] == "nosniff"
    assert html.headers["content-security-policy"] == "sandbox"
    png = await keyed.client.get(f"{BASE}/{email_id}/attachments/1", headers=key)
    assert png.content == b"\x89PNG"
    assert png.headers["content-type"] == "image/png"
    for bad in ("2", "-1", "x", "99999999999999999999"):
        missing = await keyed.client.get(f"{BASE}/{email_id}/attachments/{bad}", headers=key)
        assert_envelope(missing, 404, "invalid_request_error", "attachment_not_found")

    raw_key = (await keyed.services.inbound.store.get(ann_id, email_id)).raw_key  # type: ignore[union-attr]
    deleted = await keyed.client.delete(f"{BASE}/{email_id}", headers=key)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": email_id, "object": "inbound_email", "deleted": True}
    assert await keyed.services.inbound.raw.get(raw_key) is None
    for path in (f"{BASE}/{email_id}", f"{BASE}/{email_id}/raw"):
        gone = await keyed.client.get(path, headers=key)
        assert_envelope(gone, 404, "invalid_request_error", "inbound_email_not_found")
    again = await keyed.client.delete(f"{BASE}/{email_id}", headers=key)
    assert_envelope(again, 404, "invalid_request_error", "inbound_email_not_found")


async def test_a_missing_raw_file_is_a_404(keyed: Keyed) -> None:
    ann_id, session = await keyed.user()
    email_id = await _deliver(keyed, ann_id, message(attachment=b"x"))
    row = await keyed.services.inbound.store.get(ann_id, email_id)
    assert row is not None
    await keyed.services.inbound.raw.delete(row.raw_key)
    for path in (f"{BASE}/{email_id}/raw", f"{BASE}/{email_id}/attachments/0"):
        response = await keyed.client.get(path, headers=session)
        assert_envelope(response, 404, "invalid_request_error", "inbound_email_raw_missing")


async def test_lists_page_newest_first(keyed: Keyed) -> None:
    ann_id, session = await keyed.user()
    ids = [
        await _deliver(keyed, ann_id, message(message_id=f"<p{i}@client.test>", subject=f"n{i}"))
        for i in range(5)
    ]
    first = (await keyed.client.get(f"{BASE}?limit=2", headers=session)).json()
    assert [e["id"] for e in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    assert first["data"][0]["headers"] is None  # lists carry no header dump
    second = await keyed.client.get(
        f"{BASE}?limit=2&cursor={first['next_cursor']}", headers=session
    )
    assert [e["id"] for e in second.json()["data"]] == ids[::-1][2:4]
    third = (await keyed.client.get(f"{BASE}?limit=2&offset=4", headers=session)).json()
    assert [e["id"] for e in third["data"]] == [ids[0]]
    assert third["has_more"] is False
    for query in ("limit=0", "limit=101", "offset=-1", "cursor=nope", "cursor=x&offset=1"):
        bad = await keyed.client.get(f"{BASE}?{query}", headers=session)
        assert bad.status_code == 400, (query, bad.text)
    convs = (
        await keyed.client.get("/api/v1/bavimail/conversations?limit=3", headers=session)
    ).json()
    assert len(convs["data"]) == 3
    assert convs["has_more"] is True
    assert convs["data"][0]["object"] == "conversation"


async def test_conversations_thread_sent_and_received(keyed: Keyed) -> None:
    ann_id, session = await keyed.user()
    store = keyed.services.inbound.store
    conv = await store.link_outbound(
        ann_id, sent_message_id="msg_01", message_id="out1@acme.test", subject="Offer"
    )
    reply_id = await _deliver(keyed, ann_id, message(in_reply_to="<out1@acme.test>"))
    got = await keyed.client.get(f"/api/v1/bavimail/conversations/{conv}", headers=session)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["subject"] == "Offer"
    assert body["message_count"] == 2
    assert body["inbound_count"] == 1
    assert [(m["direction"], m["id"]) for m in body["messages"]] == [
        ("outbound", "msg_01"),
        ("inbound", reply_id),
    ]
    assert body["messages"][1]["inbound"]["subject"] == "Hello"
    assert body["messages"][0]["inbound"] is None
    listed = (await keyed.client.get("/api/v1/bavimail/conversations", headers=session)).json()
    assert [c["id"] for c in listed["data"]] == [conv]


async def test_a_message_without_message_id_still_shows_in_its_thread(keyed: Keyed) -> None:
    ann_id, session = await keyed.user()
    email_id = await _deliver(keyed, ann_id, message(message_id=None))
    row = await keyed.services.inbound.store.get(ann_id, email_id)
    assert row is not None
    got = await keyed.client.get(
        f"/api/v1/bavimail/conversations/{row.conversation_id}", headers=session
    )
    assert [(m["direction"], m["id"]) for m in got.json()["messages"]] == [("inbound", email_id)]


async def test_ownership_and_malformed_ids_are_404(keyed: Keyed) -> None:
    ann_id, ann = await keyed.user()
    _, bob = await keyed.user()
    email_id = await _deliver(keyed, ann_id, message(attachment=b"x"))
    conv = (await keyed.services.inbound.store.get(ann_id, email_id)).conversation_id  # type: ignore[union-attr]
    for method, path, code in (
        ("GET", f"{BASE}/{email_id}", "inbound_email_not_found"),
        ("GET", f"{BASE}/{email_id}/raw", "inbound_email_not_found"),
        ("GET", f"{BASE}/{email_id}/attachments/0", "inbound_email_not_found"),
        ("DELETE", f"{BASE}/{email_id}", "inbound_email_not_found"),
        ("GET", f"/api/v1/bavimail/conversations/{conv}", "conversation_not_found"),
        ("GET", f"{BASE}/inb_nope", "inbound_email_not_found"),
        ("GET", "/api/v1/bavimail/conversations/cnv_%2E%2Ex", "conversation_not_found"),
        (
            "GET",
            "/api/v1/bavimail/conversations/inb_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "conversation_not_found",
        ),
    ):
        response = await keyed.client.request(method, path, headers=bob)
        assert_envelope(response, 404, "invalid_request_error", code)
    assert (await keyed.client.get(BASE, headers=bob)).json()["data"] == []
    assert (await keyed.client.get(f"{BASE}/{email_id}", headers=ann)).status_code == 200


async def test_the_bavimail_scope_is_required(keyed: Keyed) -> None:
    ann_id, session = await keyed.user()
    email_id = await _deliver(keyed, ann_id, message())
    other = await keyed.key(session, ["jobs:read"])
    reader = await keyed.key(session, ["bavimail:read"])
    denied = await keyed.client.get(BASE, headers=other)
    assert denied.status_code == 403
    assert (await keyed.client.get(BASE, headers=reader)).status_code == 200
    refused = await keyed.client.delete(f"{BASE}/{email_id}", headers=reader)
    assert refused.status_code == 403
    no_key = await keyed.client.get(BASE)
    assert no_key.status_code == 401
