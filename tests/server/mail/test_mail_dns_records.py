"""The records a domain publishes, for each shape of mail config; keys, selectors, names."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.mail.dns_records import (
    DkimKey,
    MailConfig,
    generate_dkim_key,
    new_selector,
    normalise_domain,
    records_for,
    spf_mechanisms,
)
from server.settings import SettingsError, load_settings

KEYS = (
    DkimKey("new", "NEWKEY", "active", 1.0),
    DkimKey("old", "OLDKEY", "retiring", 0.0),
    DkimKey("next", "NEXTKEY", "pending", 2.0),
)


def test_cname_return_path_and_inbound_mx() -> None:
    config = MailConfig(
        spf_include="spf.example.net",
        relay_ips=("192.0.2.1", "2001:db8::1"),
        return_path_host="rp.example.net",
        inbound_mx_host="mx.example.net",
        dmarc_rua="reports@example.net",
    )
    records = {
        (r.purpose, r.selector): r for r in records_for("a.test", KEYS, config, inbound=True)
    }
    assert records[("dkim", "new")].name == "new._domainkey.a.test"
    assert records[("dkim", "new")].value == "v=DKIM1; k=rsa; h=sha256; p=NEWKEY"
    assert records[("dkim", "new")].required
    assert not records[("dkim_retiring", "old")].required
    assert not records[("dkim_pending", "next")].required
    spf = records[("spf", None)]
    assert (spf.name, spf.required) == ("a.test", True)
    assert spf.value == "v=spf1 include:spf.example.net ip4:192.0.2.1 ip6:2001:db8::1 ~all"
    assert records[("dmarc", None)].value == "v=DMARC1; p=none; rua=mailto:reports@example.net"
    rp = records[("return_path", None)]
    assert (rp.type, rp.name, rp.value, rp.required) == (
        "CNAME", "bounces.a.test", "rp.example.net", False,
    )  # fmt: skip
    assert ("return_path_spf", None) not in records
    mx = records[("inbound_mx", None)]
    assert (mx.type, mx.name, mx.value, mx.priority) == ("MX", "a.test", "mx.example.net", 10)
    without = records_for("a.test", KEYS, config, inbound=False)
    assert "inbound_mx" not in {r.purpose for r in without}


def test_own_return_path_mx_and_spf_without_a_cname_target() -> None:
    config = MailConfig(relay_host="relay.example.net", return_path_subdomain="rp")
    records = {r.purpose: r for r in records_for("a.test", KEYS[:1], config, inbound=True)}
    assert records["return_path"].type == "MX"
    assert (records["return_path"].name, records["return_path"].value) == (
        "rp.a.test", "relay.example.net",
    )  # fmt: skip
    assert records["return_path_spf"].value == "v=spf1 a:relay.example.net ~all"
    assert "inbound_mx" not in records  # no inbound host configured
    assert records["dmarc"].value == "v=DMARC1; p=none; rua=mailto:dmarc-reports@a.test"
    bare = {r.purpose for r in records_for("a.test", KEYS[:1], MailConfig(), inbound=True)}
    assert bare == {"dkim", "spf", "dmarc"}
    assert spf_mechanisms(MailConfig()) == ("mx",)


@pytest.mark.parametrize(
    "bad",
    [
        {"relay_ips": ("not-an-ip",)},
        {"return_path_subdomain": "a.b"},
        {"selector_prefix": "Bad_Prefix"},
        {"relay_host": "bad host"},
        {"inbound_mx_host": "x"},
        {"dmarc_rua": "no-at-sign"},
        {"dmarc_rua": "a@b.test,mailto:c@d.test"},
    ],
)
def test_config_is_checked(bad: dict[str, object]) -> None:
    field_name = next(iter(bad))
    with pytest.raises(ValueError, match=f"^{field_name}: invalid"):
        MailConfig(**bad)  # type: ignore[arg-type]
    setting = "public_relay_host" if field_name == "relay_host" else field_name
    with pytest.raises(SettingsError, match=f"BAVLIO_MAIL_{setting.upper()}"):
        load_settings(env_file=None, **{f"mail_{setting}": _setting(bad[field_name])})


def _setting(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def test_generated_keys_and_selectors() -> None:
    pem, public = generate_dkim_key()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    der = base64.b64decode(public)
    assert (
        serialization.load_der_public_key(der).public_numbers() == key.public_key().public_numbers()
    )  # type: ignore[union-attr]
    assert len(f"p={public}") > 255  # published as several TXT strings
    selector = new_selector("bavlio", now=1_796_601_600.0)
    assert re.fullmatch(r"bavlio-20261207-[0-9a-f]{6}", selector)
    assert new_selector("bavlio") != new_selector("bavlio")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM.", "example.com"),
        (" mail.example.com ", "mail.example.com"),
        ("xn--bcher-kva.test", "xn--bcher-kva.test"),
        ("localhost", None),
        ("bücher.test", None),
        ("a..b", None),
        ("-a.test", None),
        ("a_b.test", None),
        ("192.0.2.1", None),
        ("a." * 130 + "test", None),
        ("", None),
    ],
)
def test_domain_names(text: str, expected: str | None) -> None:
    assert normalise_domain(text) == expected
