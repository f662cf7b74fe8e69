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
        ("::ffff:8.8.8.8", None),  # IPv4-mapped public: the same host as 8.8.8.8
        # IPv6 forms that embed an IPv4 address are judged by it (hardening 16)
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("2002:7f00:1:5::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link_local"),  # 6to4 of the metadata service
        ("2002:c0a8:101:1::1", "private"),  # 6to4 of 192.168.1.1
        ("2002:6440:1::", "cgnat"),  # 6to4 of 100.64.0.1
        ("2002:808:808::1", None),  # 6to4 of 8.8.8.8
        ("2001:0:a00:1:8000:63bf:3fff:fdd2", "private"),  # Teredo, server 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo, client ~10.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client ~127.0.0.1
        (
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
            "private",
        ),  # Teredo of public IPv4s: still 2001::/23
        ("::10.0.0.1", "private"),  # IPv4-compatible
        ("::127.0.0.1", "loopback"),
        ("::8.8.8.8", "reserved"),  # deprecated form: never dialled
        ("64:ff9b::10.0.0.1", "private"),  # NAT64 well-known prefix
        ("64:ff9b::a9fe:a9fe", "link_local"),
        ("64:ff9b::8.8.8.8", "reserved"),  # only meaningful inside a NAT64 network
        ("64:ff9b:1::a00:1", "private"),  # local-use NAT64 (RFC 8215)
        ("64:ff9b:1:a00:1:0:0:1", "private"),
        ("64:ff9b:1:808:8:800::", "private"),  # local-use NAT64 of 8.8.8.8: local by definition
        ("fec0::1", "private"),  # deprecated site-local
        ("feff:ffff::1", "private"),
    ],
)
def test_classification(address: str, expected: str | None) -> None:
    assert classify_address(address) == expected


def test_non_ip_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        classify_address("mx.example.net")


@given(st.ip_addresses())
def test_never_more_permissive_than_the_ip_registry(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    effective = mapped or ip
    special = effective.is_multicast or effective.is_reserved
    if not effective.is_global or special:
        assert is_forbidden(str(ip))


@given(st.ip_addresses(v=4))
def test_ipv4_forbidden_exactly_when_not_global_unicast(ip: ipaddress.IPv4Address) -> None:
    assert is_forbidden(str(ip)) is (not ip.is_global or ip.is_multicast or ip.is_reserved)


_FORBIDDEN_V4 = st.ip_addresses(v=4).filter(lambda ip: is_forbidden(str(ip)))
_BITS = st.integers(min_value=0, max_value=2**128 - 1)


def _embed(form: str, v4: int, noise: int) -> ipaddress.IPv6Address:
    """``v4`` inside an IPv6 address of the given form; ``noise`` fills the free bits."""
    if form == "mapped":
        n = 0xFFFF << 32 | v4
    elif form == "compatible":
        n = v4
    elif form == "6to4":
        n = 0x2002 << 112 | v4 << 80 | noise % 2**80
    elif form == "teredo_server":
        n = 0x20010000 << 96 | v4 << 64 | noise % 2**64
    elif form == "teredo_client":
        n = 0x20010000 << 96 | (noise % 2**64) << 32 & (2**96 - 2**32) | (~v4 & 0xFFFFFFFF)
    elif form == "nat64":
        n = 0x64FF9B << 96 | v4
    elif form == "nat64_local_96":
        n = 0x64FF9B0001 << 80 | (noise % 2**48) << 32 | v4
    else:  # nat64_local_48: RFC 6052 /48 layout, v4 split around the zero "u" octet
        n = 0x64FF9B0001 << 80 | (v4 >> 16) << 64 | (v4 & 0xFFFF) << 40 | noise % 2**40
    return ipaddress.IPv6Address(n)


@given(
    _FORBIDDEN_V4,
    st.sampled_from(
        [
            "mapped",
            "compatible",
            "6to4",
            "teredo_server",
            "teredo_client",
            "nat64",
            "nat64_local_96",
            "nat64_local_48",
        ]
    ),
    _BITS,
)
def test_any_forbidden_ipv4_embedded_in_ipv6_is_refused(
    v4: ipaddress.IPv4Address, form: str, noise: int
) -> None:
    ip = _embed(form, int(v4), noise)
    assert is_forbidden(str(ip)), (form, str(v4), str(ip))
    assert dialable([str(ip)], allow_private=False) == ()


@given(_FORBIDDEN_V4, _BITS)
def test_6to4_embedding_is_decoded_to_the_same_class(v4: ipaddress.IPv4Address, noise: int) -> None:
    assert classify_address(str(_embed("6to4", int(v4), noise))) == classify_address(str(v4))


@given(st.ip_addresses(v=6, network="fec0::/10"))
def test_site_local_is_refused(ip: ipaddress.IPv6Address) -> None:
    assert classify_address(str(ip)) == "private"


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
