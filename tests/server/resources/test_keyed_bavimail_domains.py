"""BaviMail domains and aliases through the keyed API on both backends, with DNS answered by a
real NSD (the lab) serving the records a test publishes: verify, each failure status, rotation,
aliases, the sending identity, ownership and error paths."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from keyed_helpers import Keyed, keyed_app, keyed_settings
from lab.dnslab import DnsLab
from lab.mailstack import running_dns
from tests_server_helpers import assert_envelope

from emailintel.dns import DnsResolver
from server.mail import store as mail_store
from server.mail.dns_records import generate_dkim_key
from server.mail.identity import DomainNotVerified, sending_identity
from server.settings import Settings

pytestmark = pytest.mark.lab

Headers = dict[str, str]
Record = dict[str, Any]
BASE = "/api/v1/bavimail"
MAIL = {
    "mail_public_relay_host": "relay.bavlio.test",
    "mail_relay_ips": ["192.0.2.10"],
    "mail_return_path_host": "rp.bavlio.test",
    "mail_inbound_mx_host": "mx.bavlio.test",
    "mail_dmarc_rua": "dmarc@bavlio.test",
}
# An include chain ten deep: with the relay's a: that is 11 DNS lookups (RFC 7208 §4.6.4).
CHAIN = [(f"c{i}", "TXT", f'"v=spf1 include:c{i + 1}.inc.test -all"') for i in range(1, 10)]
CHAIN.append(("c10", "TXT", '"v=spf1 -all"'))


@pytest.fixture(scope="module")
def lab() -> Iterator[DnsLab]:
    """An NSD of this module's own: tests publish zones on it."""
    with running_dns(DnsLab({"inc.test": CHAIN})) as dns:
        yield dns


@pytest_asyncio.fixture(loop_scope="function")
async def mail(backend_settings: Settings, tmp_path: Path, lab: DnsLab) -> AsyncIterator[Keyed]:
    """The keyed app with mail settings, resolving through the lab (no cache: zones change);
    the zones an earlier test published are gone."""
    stale = [name for name in lab.zones if name not in (".", "inc.test")]
    for name in stale:
        del lab.zones[name]
    if stale:
        lab.reload()
    resolver = DnsResolver([lab.nameserver], timeout=2.0, cache=False)
    settings = keyed_settings(backend_settings, tmp_path, **MAIL)
    async with keyed_app(settings, resolver=resolver) as running:
        yield running


def _txt(value: str) -> str:
    return " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))


def _zone(domain: str, records: list[Record]) -> list[tuple[str, str, str]]:
    """Zone-file lines for the setup records under ``domain``."""
    out = []
    for record in records:
        name = record["name"]
        owner = "@" if name == domain else name.removesuffix("." + domain)
        if record["type"] == "TXT":
            out.append((owner, "TXT", _txt(record["value"])))
        elif record["type"] == "MX":
            out.append((owner, "MX", f"{record['priority']} {record['value']}."))
        else:
            out.append((owner, record["type"], record["value"] + "."))
    return out


def publish(
    lab: DnsLab,
    domain: str,
    records: list[Record],
    change: Callable[[list[tuple[str, str, str]]], list[tuple[str, str, str]]] | None = None,
) -> None:
    """Serve ``records`` (after ``change``) as the zone of ``domain``."""
    lines = _zone(domain, records)
    lab.add_zone(domain, change(lines) if change else lines)
    lab.reload()


async def add_domain(keyed: Keyed, headers: Headers, name: str, **extra: Any) -> Record:
    made = await keyed.client.post(f"{BASE}/domains", json={"name": name, **extra}, headers=headers)
    assert made.status_code == 201, made.text
    body: Record = made.json()
    return body


async def verify(keyed: Keyed, headers: Headers, domain_id: str) -> Record:
    response = await keyed.client.post(f"{BASE}/domains/{domain_id}/verify", headers=headers)
    assert response.status_code == 200, response.text
    body: Record = response.json()
    return body


def statuses(checks: list[Record]) -> dict[str, str]:
    return {c["purpose"]: c["status"] for c in checks}


async def caller(keyed: Keyed, scopes: list[str] | None = None) -> tuple[str, Headers]:
    user_id, session = await keyed.user()
    return user_id, await keyed.key(session, scopes)


async def test_add_publish_verify_alias_and_identity(mail: Keyed, lab: DnsLab) -> None:
    user_id, headers = await caller(mail, ["bavimail:write"])
    domain = await add_domain(mail, headers, "Good.Test", inbound=True)
    assert domain["name"] == "good.test"
    assert domain["status"] == "not_started"
    purposes = {r["purpose"]: r for r in domain["records"]}
    assert set(purposes) == {"dkim", "spf", "dmarc", "return_path", "inbound_mx"}
    dkim = purposes["dkim"]
    assert dkim["name"] == f"{domain['dkim_selector']}._domainkey.good.test"
    assert dkim["value"].startswith("v=DKIM1; k=rsa; h=sha256; p=MII")
    assert purposes["spf"]["value"] == "v=spf1 a:relay.bavlio.test ip4:192.0.2.10 ~all"
    assert purposes["dmarc"] == {
        "purpose": "dmarc",
        "type": "TXT",
        "name": "_dmarc.good.test",
        "value": "v=DMARC1; p=none; rua=mailto:dmarc@bavlio.test",
        "priority": None,
        "required": True,
        "selector": None,
    }
    assert purposes["return_path"]["type"] == "CNAME"
    assert purposes["return_path"]["value"] == "rp.bavlio.test"
    assert purposes["inbound_mx"]["value"] == "mx.bavlio.test"

    setup = await mail.client.get(f"{BASE}/domains/{domain['id']}/setup", headers=headers)
    assert setup.status_code == 200
    assert setup.json()["records"] == domain["records"]

    # Nothing published yet: every record is missing, the domain stays unverified.
    status = await mail.client.get(f"{BASE}/domains/{domain['id']}/dns-status", headers=headers)
    assert status.status_code == 200
    assert status.json()["status"] == "not_verified"
    assert set(statuses(status.json()["records"]).values()) == {"missing"}
    # No alias on an unverified domain, no identity either.
    alias = await mail.client.post(
        f"{BASE}/aliases", json={"domain_id": domain["id"], "local_part": "ann"}, headers=headers
    )
    assert_envelope(alias, 409, "invalid_request_error", "domain_not_verified")
    with pytest.raises(DomainNotVerified):
        await sending_identity(
            mail.services.db.engine, mail.services.keyed.mail_seal_key, user_id, "ann@good.test"
        )

    publish(lab, "good.test", setup.json()["records"])
    verified = await verify(mail, headers, domain["id"])
    assert verified["status"] == "verified", verified["last_check"]
    assert verified["verified_at"] is not None
    assert set(statuses(verified["last_check"]).values()) == {"ok"}
    got = await mail.client.get(f"{BASE}/domains/{domain['id']}", headers=headers)
    assert got.json()["status"] == "verified"

    alias = await mail.client.post(
        f"{BASE}/aliases",
        json={
            "domain_id": domain["id"],
            "local_part": "Ann.Lee",
            "display_name": "Ann Lee",
            "reply_to": "replies@good.test",
            "forwarding": [{"to": "ann@elsewhere.test"}],
        },
        headers=headers,
    )
    assert alias.status_code == 201, alias.text
    assert alias.json()["address"] == "ann.lee@good.test"
    assert alias.json()["forwarding"] == [{"to": "ann@elsewhere.test", "enabled": True}]

    identity = await sending_identity(
        mail.services.db.engine,
        mail.services.keyed.mail_seal_key,
        user_id,
        "Ann <ANN.LEE@good.test>",
    )
    assert identity.domain == "good.test"
    assert identity.selector == domain["dkim_selector"]
    assert identity.alias_display_name == "Ann Lee"
    assert identity.reply_to == "replies@good.test"
    assert identity.tracking is False
    key = serialization.load_pem_private_key(identity.private_key_pem, password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert dkim["value"].endswith("p=" + base64.b64encode(public).decode())
    assert key.key_size == 2048  # type: ignore[union-attr]
    plain = await sending_identity(
        mail.services.db.engine, mail.services.keyed.mail_seal_key, user_id, "other@good.test"
    )
    assert plain.alias_display_name is None
    assert plain.reply_to is None


@pytest.mark.parametrize(
    ("name", "change", "purpose", "expected"),
    [
        (
            "wrongkey.test",
            lambda lines: [
                (o, t, _txt("v=DKIM1; k=rsa; p=" + generate_dkim_key()[1]))
                if "_domainkey" in o
                else (o, t, v)
                for o, t, v in lines
            ],
            "dkim",
            "dkim_key_mismatch",
        ),
        (
            "nodmarc.test",
            lambda lines: [line for line in lines if line[0] != "_dmarc"],
            "dmarc",
            "missing",
        ),
        (
            "badmarc.test",
            lambda lines: [
                (o, t, '"v=DMARC1; p=maybe"') if o == "_dmarc" else (o, t, v) for o, t, v in lines
            ],
            "dmarc",
            "dmarc_invalid",
        ),
        (
            "twospf.test",
            lambda lines: [*lines, ("@", "TXT", '"v=spf1 mx -all"')],
            "spf",
            "extra_spf_record",
        ),
        (
            "deepspf.test",
            lambda lines: [
                (o, t, '"v=spf1 include:c1.inc.test a:relay.bavlio.test ip4:192.0.2.10 ~all"')
                if o == "@" and "spf1" in v
                else (o, t, v)
                for o, t, v in lines
            ],
            "spf",
            "spf_too_many_lookups",
        ),
        (
            "oldspf.test",
            lambda lines: [
                (o, t, '"v=spf1 a:relay.bavlio.test ~all"') if "spf1" in v else (o, t, v)
                for o, t, v in lines
            ],
            "spf",
            "wrong_value",
        ),
    ],
)
async def test_each_fault_has_its_own_status(
    mail: Keyed,
    lab: DnsLab,
    name: str,
    change: Callable[[list[tuple[str, str, str]]], list[tuple[str, str, str]]],
    purpose: str,
    expected: str,
) -> None:
    _, headers = await caller(mail)
    domain = await add_domain(mail, headers, name)
    publish(lab, name, domain["records"], change)
    status = await mail.client.get(f"{BASE}/domains/{domain['id']}/dns-status", headers=headers)
    found = statuses(status.json()["records"])
    assert found[purpose] == expected, status.json()
    assert {p: s for p, s in found.items() if p != purpose} == {
        p: "ok" for p in found if p != purpose
    }
    assert status.json()["status"] == "not_verified"
    verified = await verify(mail, headers, domain["id"])
    assert verified["status"] == "pending"
    assert verified["verified_at"] is None
    assert statuses(verified["last_check"])[purpose] == expected


async def test_dkim_rotation_keeps_the_old_key_until_retired(mail: Keyed, lab: DnsLab) -> None:
    user_id, headers = await caller(mail)
    domain = await add_domain(mail, headers, "rotate.test")
    publish(lab, "rotate.test", domain["records"])
    assert (await verify(mail, headers, domain["id"]))["status"] == "verified"
    old = domain["dkim_selector"]

    rotated = await mail.client.post(f"{BASE}/domains/{domain['id']}/dkim/rotate", headers=headers)
    assert rotated.status_code == 200, rotated.text
    states = {k["selector"]: k["state"] for k in rotated.json()["dkim_keys"]}
    new = next(s for s, state in states.items() if state == "pending")
    assert states[old] == "active"
    again = await mail.client.post(f"{BASE}/domains/{domain['id']}/dkim/rotate", headers=headers)
    assert_envelope(again, 409, "invalid_request_error", "rotation_pending")

    # Not yet published: still verified, still signing with the old key.
    before = await verify(mail, headers, domain["id"])
    assert before["status"] == "verified"
    assert statuses(before["last_check"])["dkim_pending"] == "missing"
    engine, seal = mail.services.db.engine, mail.services.keyed.mail_seal_key
    assert (await sending_identity(engine, seal, user_id, "a@rotate.test")).selector == old

    publish(lab, "rotate.test", rotated.json()["records"])
    after = await verify(mail, headers, domain["id"])
    states = {k["selector"]: k["state"] for k in after["dkim_keys"]}
    assert states == {old: "retiring", new: "active"}
    assert after["dkim_selector"] == new
    assert {r["purpose"] for r in after["records"]} >= {"dkim", "dkim_retiring"}
    assert (await sending_identity(engine, seal, user_id, "a@rotate.test")).selector == new

    retired = await mail.client.post(f"{BASE}/domains/{domain['id']}/dkim/retire", headers=headers)
    assert retired.status_code == 200
    assert [k["selector"] for k in retired.json()["dkim_keys"]] == [new]


async def test_update_list_delete_and_the_in_use_hook(mail: Keyed) -> None:
    _, headers = await caller(mail)
    first = await add_domain(mail, headers, "one.test")
    second = await add_domain(mail, headers, "two.test", tracking=True)
    duplicate = await mail.client.post(
        f"{BASE}/domains", json={"name": "ONE.test."}, headers=headers
    )
    assert_envelope(duplicate, 409, "invalid_request_error", "domain_exists")

    page = await mail.client.get(f"{BASE}/domains", params={"limit": 1}, headers=headers)
    assert [d["id"] for d in page.json()["data"]] == [second["id"]]
    assert page.json()["has_more"] is True
    rest = await mail.client.get(
        f"{BASE}/domains", params={"cursor": page.json()["next_cursor"]}, headers=headers
    )
    assert [d["id"] for d in rest.json()["data"]] == [first["id"]]

    updated = await mail.client.put(
        f"{BASE}/domains/{first['id']}", json={"inbound": True}, headers=headers
    )
    assert updated.status_code == 200
    assert (updated.json()["inbound"], updated.json()["tracking"]) == (True, False)
    assert "inbound_mx" in {r["purpose"] for r in updated.json()["records"]}

    async def busy(_engine: Any, _user: str, domain_id: str) -> list[str]:
        return ["campaign cmp_1 sends from it"] if domain_id == first["id"] else []

    mail_store.IN_USE_CHECKS.append(busy)
    try:
        refused = await mail.client.delete(f"{BASE}/domains/{first['id']}", headers=headers)
    finally:
        mail_store.IN_USE_CHECKS.remove(busy)
    error = assert_envelope(refused, 409, "invalid_request_error", "domain_in_use")
    assert "cmp_1" in error["message"]

    deleted = await mail.client.delete(f"{BASE}/domains/{first['id']}", headers=headers)
    assert deleted.json() == {"id": first["id"], "object": "bavimail_domain", "deleted": True}
    gone = await mail.client.get(f"{BASE}/domains/{first['id']}", headers=headers)
    assert_envelope(gone, 404, "invalid_request_error", "domain_not_found")
    again = await mail.client.post(f"{BASE}/domains", json={"name": "one.test"}, headers=headers)
    assert again.status_code == 201  # the name is free again


async def verified_domain(keyed: Keyed, user_id: str, headers: Headers, name: str) -> str:
    """A domain marked verified through the store (for tests about aliases, not DNS)."""
    domain = await add_domain(keyed, headers, name)
    await keyed.services.mail.record_check(user_id, domain["id"], [], "verified", pending_ok=False)
    domain_id: str = domain["id"]
    return domain_id


async def test_alias_crud_and_header_injection(mail: Keyed) -> None:
    user_id, headers = await caller(mail)
    domain_id = await verified_domain(mail, user_id, headers, "alias.test")
    url = f"{BASE}/aliases"
    made = await mail.client.post(
        url, json={"domain_id": domain_id, "local_part": "sales"}, headers=headers
    )
    assert made.status_code == 201, made.text
    alias = made.json()
    assert (alias["display_name"], alias["reply_to"], alias["forwarding"]) == (None, None, [])
    twice = await mail.client.post(
        url, json={"domain_id": domain_id, "local_part": "SALES"}, headers=headers
    )
    assert_envelope(twice, 409, "invalid_request_error", "alias_exists")

    bad_bodies = [
        {"display_name": "Ann\r\nBcc: victim@x.test"},
        {"display_name": "Ann\nLee"},
        {"display_name": "x" * 101},
        {"display_name": ""},
        {"display_name": "Ann\u2028Lee"},
        {"reply_to": "a@b.test\r\nBcc: c@d.test"},
        {"reply_to": "not an address"},
        {"reply_to": "a@" + "b" * 260 + ".test"},
        {"local_part": "a@b"},
        {"local_part": "a b"},
        {"local_part": "x" * 65},
        {"forwarding": [{"to": "x"}]},
        {"forwarding": [{"to": "a@b.test"}] * 11},
        {"unknown": 1},
    ]
    for extra in bad_bodies:
        body = {"domain_id": domain_id, "local_part": "bob", **extra}
        response = await mail.client.post(url, json=body, headers=headers)
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"

    missing = await mail.client.post(
        url, json={"domain_id": "dom_nope", "local_part": "bob"}, headers=headers
    )
    assert_envelope(missing, 404, "invalid_request_error", "domain_not_found")

    one = f"{url}/{alias['id']}"
    changed = await mail.client.put(
        one,
        json={"display_name": "Sales Team", "reply_to": "Desk@Alias.test"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["display_name"] == "Sales Team"
    assert changed.json()["reply_to"] == "Desk@alias.test"
    cleared = await mail.client.put(one, json={"reply_to": None}, headers=headers)
    assert cleared.json()["reply_to"] is None
    assert cleared.json()["display_name"] == "Sales Team"
    injected = await mail.client.put(one, json={"display_name": "a\rb"}, headers=headers)
    assert injected.status_code == 400

    listed = await mail.client.get(url, params={"domain_id": domain_id}, headers=headers)
    assert [a["id"] for a in listed.json()["data"]] == [alias["id"]]
    other = await mail.client.get(url, params={"domain_id": "dom_" + "0" * 26}, headers=headers)
    assert other.json()["data"] == []
    assert (await mail.client.get(one, headers=headers)).json()["address"] == "sales@alias.test"
    deleted = await mail.client.delete(one, headers=headers)
    assert deleted.json()["deleted"] is True
    assert_envelope(
        await mail.client.get(one, headers=headers), 404, "invalid_request_error", "alias_not_found"
    )
    # Deleting a domain takes its aliases with it.
    await mail.client.post(url, json={"domain_id": domain_id, "local_part": "x"}, headers=headers)
    await mail.client.delete(f"{BASE}/domains/{domain_id}", headers=headers)
    assert (await mail.client.get(url, headers=headers)).json()["data"] == []


async def test_ownership_scopes_and_bad_input(mail: Keyed) -> None:
    alice_id, alice = await caller(mail)
    _, bob = await caller(mail)
    domain_id = await verified_domain(mail, alice_id, alice, "owned.test")
    alias = await mail.client.post(
        f"{BASE}/aliases", json={"domain_id": domain_id, "local_part": "a"}, headers=alice
    )
    alias_id = alias.json()["id"]
    for method, path in [
        ("GET", f"{BASE}/domains/{domain_id}"),
        ("PUT", f"{BASE}/domains/{domain_id}"),
        ("DELETE", f"{BASE}/domains/{domain_id}"),
        ("GET", f"{BASE}/domains/{domain_id}/setup"),
        ("GET", f"{BASE}/domains/{domain_id}/dns-status"),
        ("POST", f"{BASE}/domains/{domain_id}/verify"),
        ("POST", f"{BASE}/domains/{domain_id}/dkim/rotate"),
        ("POST", f"{BASE}/domains/{domain_id}/dkim/retire"),
        ("GET", f"{BASE}/aliases/{alias_id}"),
        ("PUT", f"{BASE}/aliases/{alias_id}"),
        ("DELETE", f"{BASE}/aliases/{alias_id}"),
        ("GET", f"{BASE}/domains/dom_malformed"),
        ("GET", f"{BASE}/aliases/alias_malformed"),
    ]:
        response = await mail.client.request(method, path, json={}, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
    # bob cannot hang an alias on alice's domain, and sees none of her rows.
    stolen = await mail.client.post(
        f"{BASE}/aliases", json={"domain_id": domain_id, "local_part": "b"}, headers=bob
    )
    assert stolen.status_code == 404
    assert (await mail.client.get(f"{BASE}/domains", headers=bob)).json()["data"] == []
    assert (await mail.client.get(f"{BASE}/aliases", headers=bob)).json()["data"] == []
    # bob can add the same domain name for himself (names are unique per user).
    assert (await add_domain(mail, bob, "owned.test"))["status"] == "not_started"
    with pytest.raises(DomainNotVerified):
        await sending_identity(
            mail.services.db.engine, mail.services.keyed.mail_seal_key, "usr_x", "a@owned.test"
        )
    for bad in ["", "not a from", "a@", "@owned.test", "a@-bad-.test"]:
        with pytest.raises(DomainNotVerified):
            await sending_identity(
                mail.services.db.engine, mail.services.keyed.mail_seal_key, alice_id, bad
            )

    reader = await mail.key((await mail.user())[1], ["bavimail:read"])
    refused = await mail.client.post(f"{BASE}/domains", json={"name": "r.test"}, headers=reader)
    assert_envelope(refused, 403, "permission_error", "insufficient_scope")
    assert (await mail.client.get(f"{BASE}/domains", headers=reader)).status_code == 200
    other_scope = await mail.key((await mail.user())[1], ["jobs:write"])
    denied = await mail.client.get(f"{BASE}/domains", headers=other_scope)
    assert denied.status_code == 403

    for body in [
        {"name": "localhost"},
        {"name": "a..b.test"},
        {"name": "192.0.2.1"},
        {"name": "ex ample.test"},
        {"name": "bücher.test"},
        {"name": "x" * 300 + ".test"},
        {"name": "-a.test"},
        {"name": 5},
        {"name": "ok.test", "tracking": "yes"},
        {"name": "ok.test", "extra": True},
        {},
    ]:
        response = await mail.client.post(f"{BASE}/domains", json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    for body in [{"tracking": 1}, {"inbound": "no"}, {"other": True}]:
        response = await mail.client.put(f"{BASE}/domains/{domain_id}", json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    raw = await mail.client.post(
        f"{BASE}/domains",
        content=b"{not json",
        headers={**alice, "content-type": "application/json"},
    )
    assert raw.status_code == 400
    too_long = await mail.client.get(
        f"{BASE}/aliases", params={"domain_id": "d" * 41}, headers=alice
    )
    assert too_long.status_code == 400
    for value in ["", "dom_x", "alias_" + "0" * 26]:
        malformed = await mail.client.get(
            f"{BASE}/aliases", params={"domain_id": value}, headers=alice
        )
        assert_envelope(malformed, 400, "invalid_request_error", "parameter_invalid")


async def test_domain_and_alias_limits(mail: Keyed, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, headers = await caller(mail)
    monkeypatch.setattr(mail_store, "MAX_DOMAINS", 1)
    monkeypatch.setattr(mail_store, "MAX_ALIASES", 1)
    domain_id = await verified_domain(mail, user_id, headers, "limit.test")
    more = await mail.client.post(f"{BASE}/domains", json={"name": "more.test"}, headers=headers)
    assert_envelope(more, 409, "invalid_request_error", "too_many_domains")
    url = f"{BASE}/aliases"
    first = await mail.client.post(
        url, json={"domain_id": domain_id, "local_part": "a"}, headers=headers
    )
    assert first.status_code == 201
    second = await mail.client.post(
        url, json={"domain_id": domain_id, "local_part": "b"}, headers=headers
    )
    assert_envelope(second, 409, "invalid_request_error", "too_many_aliases")
