"""The SSRF guard's classification of IP addresses (pure, property-tested)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.errors import ConfigError
from emailintel.smtp.guard import allow_private_from_env, classify_address, dialable, is_forbidden


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link_local"),  # cloud metadata service
        ("fe80::1", "link_local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.254", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.7", "private"),  # TEST-NET-1 (documentation)
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", None),
        ("142.250.27.26", None),
        ("2a00:1450:4013:c00::1a", None),
    ],
)
def test_classification(address: str, expected: str | None) -> None:
    assert classify_address(address) == expected


def test_non_ip_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        classify_address("mx.example.net")


@given(st.ip_addresses())
def test_forbidden_exactly_when_not_global_unicast(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    effective = mapped or ip
    special = effective.is_multicast or effective.is_reserved
    assert is_forbidden(str(ip)) is (not effective.is_global or special)


@given(st.ip_addresses(v=4, network="10.0.0.0/8") | st.ip_addresses(v=4, network="127.0.0.0/8"))
def test_private_ranges_always_refused(ip: ipaddress.IPv4Address) -> None:
    assert is_forbidden(str(ip))
    assert dialable([str(ip)], allow_private=False) == ()
    assert dialable([str(ip)], allow_private=True) == (str(ip),)


@given(st.lists(st.ip_addresses().map(str), max_size=8))
def test_dialable_keeps_order_and_only_public(addresses: list[str]) -> None:
    kept = dialable(addresses, allow_private=False)
    assert list(kept) == [a for a in addresses if classify_address(a) is None]


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("0", False), ("", False)]
)
def test_env_flag(raw: str, expected: bool) -> None:
    assert allow_private_from_env({"EMAILINTEL_ALLOW_PRIVATE_MX": raw}) is expected
    assert allow_private_from_env({}) is False


def test_env_flag_garbage_is_refused() -> None:
    with pytest.raises(ConfigError):
        allow_private_from_env({"EMAILINTEL_ALLOW_PRIVATE_MX": "maybe"})
