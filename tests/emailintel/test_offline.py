"""validate_offline's per-part caches give exactly the parser's answer, cold or warm."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailintel import _fastsyntax, _offline
from emailintel.address import parse_address
from emailintel.errors import AddressError
from emailintel.models import Evidence, RiskResult
from emailintel.verify import Validator


def _reference(validator: Validator, address: str) -> RiskResult:
    """The offline result composed from the public parser, evidence and scorer (no caches)."""
    try:
        parsed = parse_address(address)
    except AddressError as exc:
        return validator.result(address, Evidence(syntax_valid=False), error=str(exc))
    return validator.result(address, validator.offline_evidence(parsed), parsed)


_LOCAL = st.one_of(
    st.text(alphabet="abcxyzABCXYZ0189._-+'!#$%&*/=?^`{|}~", min_size=1, max_size=70),
    st.sampled_from(["info", "Sales", "no-reply", "POSTMASTER", "Abuse", "xkqzvbnmwpt"]),
    st.sampled_from(["jürgen.müller", "søren", "zoe\u0308", "\u212a", "POSTMA\u212aSTER"]),
    # non-ASCII local parts with what the guard trims or refuses, and what NFC changes
    st.text(
        alphabet=st.sampled_from(
            [*"aüøжé.+ ", "\u212a", "\u0308", "\u00a0", "\u3000", "\x85", "\u2028", "<", "\ud800"]
        ),
        min_size=1,
        max_size=20,
    ),
    st.builds("{}{}".format, st.sampled_from([" ", "\t", "\u3000", ""]), st.just("jörg")),
    st.builds(lambda n: "é" * n, st.integers(30, 34)),  # at the 64-octet limit in UTF-8
    st.builds(lambda n: "e\u0301" * n, st.integers(20, 23)),  # NFC shrinks these
)
_DOMAIN = st.one_of(
    st.sampled_from(
        [
            "acme.io",
            "Gmail.COM",
            "gmial.com",
            "mailinator.com",
            "x.test",
            "a-b.de",
            "xn--bcher-kva.de",
        ]
    ),
    st.sampled_from(
        ["host.invalid", "a.localhost", "x--y.com", "bücher.de", "a..b", "a.b.", "-a.io"]
    ),
    st.sampled_from(["[127.0.0.1]", "", "com", "1.2.3.4", "x.c0m", "acme.io "]),
    # long domains, so the whole address crosses 254 octets while each part alone is fine
    st.builds(lambda n: ".".join(["a" * 60] * n) + ".com", st.integers(1, 4)),
    st.builds(
        lambda n, m: ".".join(["a" * 60] * n) + "." + "b" * m + ".io",
        st.integers(2, 3),
        st.integers(1, 60),
    ),
)
_ADDRESS = st.one_of(
    st.builds("{}@{}".format, _LOCAL, _DOMAIN),
    st.builds("{}@{}@{}".format, _LOCAL, _LOCAL, _DOMAIN),
    st.text(max_size=40),
    st.text(st.characters(exclude_categories=()), max_size=40),
)

_WARM = Validator(check_dns=False)  # shared on purpose: later examples hit cached parts


@settings(max_examples=1500, deadline=None)  # cold validators; a shared, busy machine
@given(_ADDRESS)
def test_part_caches_equal_the_parser_cold_and_warm(address: str) -> None:
    cold = Validator(check_dns=False)
    expected = _reference(cold, address)
    assert cold.validate_offline(address) == expected
    assert cold.validate_offline(address) == expected  # second time from the caches
    assert _WARM.validate_offline(address) == expected


@given(_LOCAL)
def test_parse_local_agrees_with_the_address_fast_path(local: str) -> None:
    """A local part taken alone is taken in any address with a short simple domain."""
    part = _fastsyntax.parse_local(local, max_octets=64)
    text, simple = _parse_fast_or_none(f"{local}@acme.io")
    if part is None:
        return
    assert simple is not None
    assert text == f"{local}@acme.io"
    assert (simple.local_part, simple.smtputf8) == (part[0], not local.isascii())


def _parse_fast_or_none(address: str) -> tuple[str | None, _fastsyntax.Simple | None]:
    from emailintel.address import parse_fast

    try:
        return parse_fast(address)
    except AddressError:
        return None, None


@pytest.mark.parametrize(
    ("address", "normalized"),
    [
        ("John.Smith@Acme.IO", "John.Smith@acme.io"),
        ("POSTMASTER@Acme.io", "postmaster@acme.io"),
        ("\u212aelvin@x.com", "Kelvin@x.com"),
        ("jose\u0301@x.com", "jos\u00e9@x.com"),
    ],
)
def test_examples_take_the_part_caches(address: str, normalized: str) -> None:
    validator = Validator(check_dns=False)
    result = validator.validate_offline(address)
    local, _, domain = address.rpartition("@")
    assert validator._parts.locals[local] is not _offline.REFUSED_LOCAL
    assert validator._parts.domains[domain] is not _offline.REFUSED_DOMAIN
    assert result.normalized == normalized
    assert result == _reference(validator, address)


@pytest.mark.parametrize(
    "address",
    [" jörg@x.com", "jörg@x.com ", '"a b"@x.com', "a@bücher.de", "a@b..com", "x" * 65 + "@a.io"],
)
def test_what_the_part_caches_refuse_goes_to_the_parser(address: str) -> None:
    validator = Validator(check_dns=False)
    result = validator.validate_offline(address)
    assert result == _reference(validator, address)
    assert validator._general[address] is result


def test_address_over_254_octets_from_cached_parts_goes_to_the_parser() -> None:
    validator = Validator(check_dns=False)
    labels = ".".join(["b" * 61] * 3)
    local = "é" * 32  # 64 octets
    assert validator.validate_offline(f"{local}@{labels}.com").error is None  # 64+1+189
    assert validator.validate_offline(f"a@{labels}.info").error is None  # caches the domain
    too_long = f"{local}@{labels}.info"  # 64+1+190: both parts cached, the address too long
    result = validator.validate_offline(too_long)
    assert result == _reference(validator, too_long)
    assert result.error is not None
    assert validator._general[too_long] is result


def test_non_string_input_is_answered_not_cached() -> None:
    validator = Validator(check_dns=False)
    result = validator.validate_offline(None)  # type: ignore[arg-type]
    assert result.error is not None
    assert result.verdict == "invalid"
    assert not validator._general


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_offline, "MAX_PARTS", 3)
    monkeypatch.setattr("emailintel.verify._GENERAL_CACHE_SIZE", 3)
    validator = Validator(check_dns=False)
    for i in range(10):
        address = f"user{i}@host{i}.com"
        assert validator.validate_offline(address) == _reference(validator, address)
        bad = f"bad{i}.@x.com"
        assert validator.validate_offline(bad) == _reference(validator, bad)
        assert len(validator._parts.domains) <= 3
        assert len(validator._parts.locals) <= 3
        assert len(validator._general) <= 3
