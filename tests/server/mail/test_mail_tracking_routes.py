"""Tracking end to end on SQLite and PostgreSQL: a tracking domain's HTML mail gets signed click
links and a pixel (the unsubscribe link left alone), opens and clicks are recorded with people
apart from machines, forged tokens lead nowhere, and only the owner sees the numbers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from sqlalchemy import select
from tests_server_helpers import assert_envelope

from server.db.models import MailMessage
from server.db.tx import read_connection
from server.mail import tracking_store
from server.settings import Settings

PUBLIC = "https://t.bavlio.test"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
HTML = (
    '<html><body><p>Hi</p><a href="https://acme.example/pricing?a=1&amp;b=2">pricing</a> '
    '<a href="https://acme.example/blog">blog</a> '
    '<a href="https://acme.example/unsubscribe/t1">unsubscribe</a></body></html>'
)


@pytest_asyncio.fixture(loop_scope="function")
async def app(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    settings = keyed_settings(backend_settings, tmp_path, public_url=PUBLIC)
    async with keyed_app(settings) as running:
        yield running


async def _send(app: Keyed, headers: dict[str, str], domain: str, *, tracking: bool) -> str:
    made = await app.client.post(
        "/api/v1/bavimail/domains", json={"name": domain, "tracking": tracking}, headers=headers
    )
    assert made.status_code == 201, made.text
    me = (await app.client.get("/api/v1/auth/me", headers=headers)).json()
    await app.services.mail.record_check(
        me["user_id"], made.json()["id"], [], "verified", pending_ok=False
    )
    sent = await app.client.post(
        "/api/v1/bavimail/emails",
        json={
            "from": f"ann@{domain}",
            "to": ["bo@client.test"],
            "subject": "News",
            "html": HTML,
            "text": "Hi",
            "list_unsubscribe_url": "https://acme.example/unsubscribe/t1",
        },
        headers=headers,
    )
    assert sent.status_code == 202, sent.text
    email_id: str = sent.json()["id"]
    return email_id


async def _html_of(app: Keyed, email_id: str) -> str:
    async with read_connection(app.services.db.engine) as conn:
        raw = (
            await conn.execute(select(MailMessage.raw).where(MailMessage.id == email_id))
        ).scalar_one()
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    html: str = part.get_content()
    return html


async def test_opens_and_clicks_are_tracked_people_apart_from_machines(app: Keyed) -> None:
    _, ann = await app.user()
    _, bob = await app.user()
    email_id = await _send(app, ann, "acme.test", tracking=True)
    html = await _html_of(app, email_id)
    clicks = re.findall(r'href="(https://t\.bavlio\.test/t/c/[^"]+)"', html)
    assert len(clicks) == 2
    assert 'href="https://acme.example/unsubscribe/t1"' in html  # never tracked
    assert "acme.example/pricing" not in html
    [pixel] = re.findall(r'src="(https://t\.bavlio\.test/t/o/[^"]+\.gif)"', html)
    local = lambda url: url.removeprefix(PUBLIC)  # noqa: E731 - the app serves the path

    opened = await app.client.get(local(pixel), headers={"User-Agent": BROWSER})
    assert (opened.status_code, opened.headers["content-type"]) == (200, "image/gif")
    assert opened.content.startswith(b"GIF89a")
    await app.client.get(local(pixel), headers={"User-Agent": "Mozilla/5.0"})  # MPP prefetch
    followed = await app.client.get(local(clicks[0]), headers={"User-Agent": BROWSER})
    assert followed.status_code == 307
    assert followed.headers["location"] == "https://acme.example/pricing?a=1&b=2"
    scanned = await app.client.head(local(clicks[0]), headers={"User-Agent": BROWSER})
    assert scanned.status_code == 307

    links = await app.client.get(f"/api/v1/bavimail/emails/{email_id}/links", headers=ann)
    assert links.status_code == 200, links.text
    body = links.json()
    assert (body["opens"], body["machine_opens"]) == (1, 1)
    assert [(row["url"], row["clicks"], row["machine_clicks"]) for row in body["data"]] == [
        ("https://acme.example/pricing?a=1&b=2", 1, 1),
        ("https://acme.example/blog", 0, 0),
    ]
    listed = await app.client.get(f"/api/v1/bavimail/emails/{email_id}/clicks", headers=ann)
    assert [(c["index"], c["actor"]) for c in listed.json()["data"]] == [
        (0, "person"),
        (0, "scanner"),
    ]
    for path in ("links", "clicks"):
        theirs = await app.client.get(f"/api/v1/bavimail/emails/{email_id}/{path}", headers=bob)
        assert_envelope(theirs, 404, "invalid_request_error", "email_not_found")


async def test_forged_tokens_lead_nowhere(app: Keyed) -> None:
    _, ann = await app.user()
    email_id = await _send(app, ann, "acme.test", tracking=True)
    html = await _html_of(app, email_id)
    [click] = re.findall(r'href="https://t\.bavlio\.test(/t/c/[^"]+)"', html)[:1]
    [pixel] = re.findall(r'src="https://t\.bavlio\.test(/t/o/[^"]+)\.gif"', html)
    token = click.rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for path in (f"/t/c/{forged}", "/t/c/garbage", f"/t/c/{pixel.rsplit('/', 1)[1]}", "/t/c/x"):
        response = await app.client.get(path)
        assert_envelope(response, 404, "invalid_request_error", "link_not_found")
    still_a_gif = await app.client.get("/t/o/garbage.gif")
    assert (still_a_gif.status_code, still_a_gif.content[:6]) == (200, b"GIF89a")
    links = (await app.client.get(f"/api/v1/bavimail/emails/{email_id}/links", headers=ann)).json()
    assert (links["opens"], links["machine_opens"]) == (0, 0)
    assert all(row["clicks"] == row["machine_clicks"] == 0 for row in links["data"])


async def test_without_tracking_the_html_is_left_alone(app: Keyed) -> None:
    _, ann = await app.user()
    email_id = await _send(app, ann, "plain.test", tracking=False)
    html = await _html_of(app, email_id)
    assert "t.bavlio.test" not in html
    assert 'href="https://acme.example/blog"' in html
    links = (await app.client.get(f"/api/v1/bavimail/emails/{email_id}/links", headers=ann)).json()
    assert links["data"] == []


async def test_a_flood_of_opens_and_clicks_is_answered_not_stored(
    app: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking_store, "MAX_EVENTS_PER_EMAIL", 3)
    _, ann = await app.user()
    email_id = await _send(app, ann, "acme.test", tracking=True)
    html = await _html_of(app, email_id)
    [click] = re.findall(r'href="https://t\.bavlio\.test(/t/c/[^"]+)"', html)[:1]
    [pixel] = re.findall(r'src="https://t\.bavlio\.test(/t/o/[^"]+\.gif)"', html)
    for _ in range(6):
        opened = await app.client.get(pixel, headers={"User-Agent": BROWSER})
        assert opened.status_code == 200
        followed = await app.client.get(click, headers={"User-Agent": BROWSER})
        assert followed.status_code == 307  # still redirected, just not stored
    links = (await app.client.get(f"/api/v1/bavimail/emails/{email_id}/links", headers=ann)).json()
    assert links["opens"] + links["machine_opens"] == 3
    assert sum(row["clicks"] + row["machine_clicks"] for row in links["data"]) == 3
    # Huge and path-like tokens are refused before any lookup.
    for path in ("/t/c/" + "A" * 60_000, "/t/c/..%2F..%2Fetc", "/t/c/%00"):
        response = await app.client.get(path)
        assert response.status_code == 404
        assert "location" not in response.headers
    huge_pixel = await app.client.get("/t/o/" + "A" * 60_000 + ".gif")
    assert (huge_pixel.status_code, huge_pixel.content[:6]) == (200, b"GIF89a")
