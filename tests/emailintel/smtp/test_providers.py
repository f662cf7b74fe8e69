"""Provider rules: the shipped data, suffix matching and malformed data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.errors import ConfigError
from emailintel.smtp.providers import (
    ProviderDataError,
    ProviderRule,
    default_providers,
    match_provider,
    parse_providers,
)


@pytest.mark.parametrize(
    ("mx_host", "name"),
    [
        ("aspmx.l.google.com", "google"),
        ("ALT1.ASPMX.L.GOOGLE.COM.", "google"),
        ("gmail-smtp-in.l.google.com", "google"),
        ("aspmx2.googlemail.com", "google"),
        ("contoso-com.mail.protection.outlook.com", "microsoft365"),
        ("hotmail-com.olc.protection.outlook.com", "outlook"),
        ("mta5.am0.yahoodns.net", "yahoo"),
        ("mxs.mail.ru", "mail.ru"),
        ("mx00.gmx.net", "gmx"),
        ("mx-ha03.web.de", "gmx"),
        ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
        ("mx0a-00123456.pphosted.com", "proofpoint"),
        ("d123456a.ess.barracudanetworks.com", "barracuda"),
        ("mx.antispamcloud.com", "antispamcloud"),
    ],
)
def test_known_mx_hosts(mx_host: str, name: str) -> None:
    rule = match_provider(mx_host)
    assert rule is not None
    assert rule.name == name


@pytest.mark.parametrize(
    "mx_host", ["mx.acme.test", "notgoogle.com", "google.com.evil.test", "outlook.com", "ru"]
)
def test_unknown_hosts_have_no_rule(mx_host: str) -> None:
    assert match_provider(mx_host) is None


def test_accept_all_providers_skip_the_catch_all_probe() -> None:
    by_name = {rule.name: rule for rule in default_providers()}
    for name in ("microsoft365", "yahoo", "mail.ru"):
        assert by_name[name].accepts_all
        assert by_name[name].skip_catch_all_probe
        assert not by_name[name].reliable
    assert by_name["google"].reliable
    assert not by_name["google"].accepts_all
    assert {"mimecast", "proofpoint", "barracuda", "antispamcloud"} <= {
        rule.name for rule in default_providers() if rule.gateway
    }


def test_longest_suffix_wins() -> None:
    rules = parse_providers(
        '[[provider]]\nname = "broad"\nsuffixes = ["outlook.com"]\n'
        '[[provider]]\nname = "narrow"\nsuffixes = ["mail.protection.outlook.com"]\n'
    )
    hit = match_provider("x.mail.protection.outlook.com", rules)
    assert hit is not None
    assert hit.name == "narrow"
    other = match_provider("smtp.outlook.com", rules)
    assert other is not None
    assert other.name == "broad"


@pytest.mark.parametrize(
    "text",
    [
        "[[provider]\n",  # bad TOML
        '[[provider]]\nname = "x"\nsuffixes = []\n',  # no suffix
        '[[provider]]\nname = "x"\nsuffixes = ["a.test"]\ncolour = "red"\n',  # unknown field
        '[[provider]]\nname = "x"\nsuffixes = ["a.test"]\nmax_connections = 0\n',
        '[[provider]]\nname = "x"\nsuffixes = [" "]\n',
        '[[provider]]\nname = "x"\nsuffixes = ["a.test"]\n'
        '[[provider]]\nname = "y"\nsuffixes = ["A.test."]\n',  # duplicate after normalising
    ],
)
def test_malformed_data_raises(text: str) -> None:
    with pytest.raises(ProviderDataError):
        parse_providers(text)


@pytest.mark.parametrize("mx_host", ["", "   ", "mx host.test"])
def test_bad_host_raises(mx_host: str) -> None:
    with pytest.raises(ConfigError):
        match_provider(mx_host)


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(st.lists(_LABEL, min_size=1, max_size=4).map(".".join))
def test_matches_only_on_label_boundaries(label: str) -> None:
    rule = match_provider(f"{label}.yahoodns.net")
    assert isinstance(rule, ProviderRule)
    assert rule.name == "yahoo"
    glued = match_provider(f"{label}yahoodns.net")
    assert glued is None
