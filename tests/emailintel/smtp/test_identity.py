"""HELO / MAIL FROM identity rules: no impersonation unless forced (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.errors import ConfigError
from emailintel.smtp.identity import Identity, identity_from_env, impersonation_problem

labels = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
own_hosts = st.builds(lambda a, b: f"{a}.{b}.test", labels, labels)


@pytest.mark.parametrize(
    "helo",
    ["gmail.com", "mx.gmail.com", "localhost", "localhost.localdomain", "example.com",
     "mail.example.org", "example.co.uk", "outlook.com", "box.local"],
)  # fmt: skip
def test_impersonating_helo_is_refused(helo: str) -> None:
    with pytest.raises(ConfigError, match="HELO"):
        Identity(helo=helo, mail_from="bounce@verifier.test")
    if "." in helo:  # a bare "localhost" is not even a host name, forced or not
        assert Identity(helo=helo, mail_from="bounce@verifier.test", force=True).helo == helo


@pytest.mark.parametrize("sender", ["noreply@gmail.com", "me@example.net", "x@yahoo.com"])
def test_impersonating_sender_is_refused(sender: str) -> None:
    with pytest.raises(ConfigError, match="MAIL FROM refused"):
        Identity(helo="probe.verifier.test", mail_from=sender)


@pytest.mark.parametrize("helo", ["probe", "", "-bad-.test", "a..b.test", "probe.verifier.test."])
def test_helo_must_be_a_fqdn(helo: str) -> None:
    if helo.endswith("."):
        assert Identity(helo=helo).helo == "probe.verifier.test"
        return
    with pytest.raises(ConfigError):
        Identity(helo=helo)


@pytest.mark.parametrize("sender", ["no-at-sign", "a b@verifier.test", "x@", "é@verifier.test"])
def test_bad_sender_is_refused(sender: str) -> None:
    with pytest.raises(ConfigError):
        Identity(helo="probe.verifier.test", mail_from=sender)


def test_address_literal_helo_is_allowed() -> None:
    assert Identity(helo="[192.0.2.1]").helo == "[192.0.2.1]"


@given(own_hosts, own_hosts)
def test_target_or_its_mx_as_helo_is_refused(host: str, other: str) -> None:
    identity = Identity(helo=host, mail_from=f"bounce@{host}")
    with pytest.raises(ConfigError, match="probed domain"):
        identity.check(targets=[host])
    with pytest.raises(ConfigError):
        identity.check(targets=[host.split(".", 1)[1]])  # HELO under the target domain
    if not (other == host or host.endswith("." + other) or other.endswith("." + host)):
        identity.check(targets=[other])


@given(own_hosts)
def test_own_hosts_are_not_impersonation(host: str) -> None:
    assert impersonation_problem(host) is None


def test_identity_from_env() -> None:
    env = {"EMAILINTEL_HELO": "probe.verifier.test", "EMAILINTEL_MAIL_FROM": "b@verifier.test"}
    identity = identity_from_env(env=env)
    assert (identity.helo, identity.mail_from) == ("probe.verifier.test", "b@verifier.test")
    assert identity.sender_domain == "verifier.test"
    null = identity_from_env(env=env, null_sender=True)
    assert null.mail_from == ""
    assert null.sender_domain is None
    assert identity_from_env("h.verifier.test", "c@verifier.test", env={}).helo == "h.verifier.test"


def test_identity_needs_configuration() -> None:
    with pytest.raises(ConfigError, match="EMAILINTEL_HELO"):
        identity_from_env(env={})
    with pytest.raises(ConfigError, match="EMAILINTEL_MAIL_FROM"):
        identity_from_env(env={"EMAILINTEL_HELO": "probe.verifier.test"})
