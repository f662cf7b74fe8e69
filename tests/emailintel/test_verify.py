"""validate(): the offline pipeline and the DNS pipeline against the real NSD lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lab.dnslab import BlackHoleDns, CountingRelay, DnsLab
from lab.probers import lab_prober

from emailintel.address import parse_address
from emailintel.dns import DnsResolver
from emailintel.errors import AddressError, PersonNameError
from emailintel.finder import Finder
from emailintel.models import Evidence, Reason, Verdict
from emailintel.risk import DEFAULT_POLICY, RiskPolicy, assess
from emailintel.verify import Validator, validate_offline, verify, verify_many


def test_offline_valid_corporate_address() -> None:
    result = validate_offline("John.Smith@Acme.IO")
    assert result.verdict != Verdict.INVALID
    assert result.normalized == "John.Smith@acme.io"
    assert result.domain == "acme.io"
    assert result.dns is None  # offline: DNS is unknown, never assumed fine
    assert result.verdict == Verdict.UNKNOWN
    assert Reason.DNS_NOT_CHECKED in result.reasons
    assert Reason.DOMAIN_NOT_FOUND not in result.reasons


@pytest.mark.parametrize(
    "address",
    ["plainaddress", "two@@at.com", "a@b..com", "", "x" * 65 + "@long.com"],
)
def test_offline_syntax_invalid(address: str) -> None:
    result = validate_offline(address)
    assert result.verdict == Verdict.INVALID
    assert result.reasons[0] == Reason.SYNTAX_INVALID
    assert result.error
    assert result.normalized is None


@pytest.mark.parametrize("address", ["a@b.com\r\nRCPT TO:<x@y.com>", "<a@b.com>", "a\x00@b.com"])
def test_injection_is_answered_invalid_not_raised(address: str) -> None:
    result = validate_offline(address)
    assert result.verdict == Verdict.INVALID
    assert Reason.SYNTAX_INVALID in result.reasons


@pytest.mark.parametrize("address", ["\ud800@example.com", "\udcffjohn@acme.io", "a@\udcff.io"])
def test_lone_surrogate_is_answered_invalid_not_raised(address: str) -> None:
    result = validate_offline(address)
    assert (result.verdict, result.reasons) == (Verdict.INVALID, (Reason.SYNTAX_INVALID,))
    assert result.error is not None
    assert "surrogate" in result.error


async def test_verify_paths_answer_a_lone_surrogate_and_checkpoint_it(tmp_path: Path) -> None:
    addresses = ["\udcffjohn@acme.io", "\ud800@x.test"]
    single = await verify(addresses[0], prober=lab_prober(), validator=Validator(check_dns=False))
    assert (single.verdict, single.reasons) == (Verdict.INVALID, (Reason.SYNTAX_INVALID,))
    checkpoint = tmp_path / "done.jsonl"
    results = [r async for r in verify_many(addresses, prober=lab_prober(), checkpoint=checkpoint)]
    assert [(r.address, r.verdict) for r in results] == [(a, Verdict.INVALID) for a in addresses]
    checkpoint.read_text(encoding="utf-8")  # valid UTF-8: the surrogates are escaped
    again = [r async for r in verify_many(addresses, prober=lab_prober(), checkpoint=checkpoint)]
    assert again == []  # both were recorded as done


def test_offline_modifiers() -> None:
    disposable = validate_offline("someone@mailinator.com")
    assert disposable.disposable is True
    assert Reason.DISPOSABLE in disposable.reasons
    # offline, DNS is unknown: the verdict says so instead of guessing
    assert disposable.verdict == Verdict.UNKNOWN
    assert Reason.DNS_NOT_CHECKED in disposable.reasons
    role = validate_offline("info@acme.io")
    assert role.role_account is True
    assert Reason.ROLE_ACCOUNT in role.reasons
    free = validate_offline("jane.doe@gmail.com")
    assert free.free_provider is True
    assert Reason.FREE_PROVIDER in free.reasons


def test_typo_suggestion_is_data_not_a_verdict() -> None:
    result = validate_offline("bob@gmial.com")
    assert result.suggestion == "bob@gmail.com"
    assert Reason.TYPO_SUSPECTED in result.reasons
    assert result.verdict != Verdict.INVALID


def test_result_json_has_documented_fields() -> None:
    data = validate_offline("jane@acme.io").model_dump(mode="json")
    for field in (
        "address",
        "normalized",
        "verdict",
        "score",
        "reasons",
        "suggestion",
        "dns",
        "smtp",
    ):
        assert field in data
    assert 0 <= data["score"] <= 100


class TestValidateWithDns:
    @pytest.fixture
    def validator(self, dns_lab) -> Validator:  # type: ignore[no-untyped-def]
        return Validator(resolver=DnsResolver([dns_lab.nameserver], timeout=2.0))

    async def test_mx_domain(self, validator: Validator) -> None:
        result = await validator.validate("john.smith@acme.test")
        assert result.dns is not None
        assert result.dns.status == "ok"
        assert [mx.host for mx in result.dns.mx] == ["mx.acme.test"]
        assert Reason.SMTP_NOT_CHECKED in result.reasons
        assert result.smtp is not None
        assert result.smtp.checked is False
        assert result.verdict == Verdict.VALID

    async def test_nxdomain(self, validator: Validator) -> None:
        result = await validator.validate("someone@does-not-exist.test")
        assert result.verdict == Verdict.INVALID
        assert result.reasons[0] == Reason.DOMAIN_NOT_FOUND

    async def test_null_mx(self, validator: Validator) -> None:
        result = await validator.validate("info@nullmx.test")
        assert result.verdict == Verdict.INVALID
        assert Reason.NULL_MX in result.reasons

    async def test_no_mx_at_all(self, validator: Validator) -> None:
        result = await validator.validate("info@empty.test")
        assert result.verdict == Verdict.INVALID
        assert Reason.NO_MX in result.reasons

    async def test_mx_host_without_address_is_invalid(self, validator: Validator) -> None:
        result = await validator.validate("john@badmx.test")
        assert (result.verdict, result.score) == (Verdict.INVALID, 10)
        assert result.reasons == (Reason.MX_UNRESOLVABLE,)
        assert result.dns is not None
        assert result.dns.status == "mx_unresolvable"

    async def test_mx_host_lookup_timeout_is_unknown(self, dns_lab: DnsLab) -> None:
        with CountingRelay(dns_lab.nameserver, drop=["A", "AAAA"]) as relay:
            resolver = DnsResolver([relay.nameserver], timeout=0.3)
            result = await Validator(resolver=resolver).validate("john@badmx.test")
        assert result.verdict == Verdict.UNKNOWN
        assert result.reasons[0] == Reason.DNS_TIMEOUT

    async def test_score_exactly_at_the_valid_threshold_is_valid(
        self, validator: Validator
    ) -> None:
        # DNS only (75) plus role_account (-5) lands on valid_threshold (70): ">=" decides.
        result = await validator.validate("info@acme.test")
        assert DEFAULT_POLICY.valid_threshold == 70
        assert (result.verdict, result.score) == (Verdict.VALID, 70)
        assert result.reasons == (Reason.SMTP_NOT_CHECKED, Reason.ROLE_ACCOUNT)

    async def test_score_one_below_the_valid_threshold_is_risky(self, dns_lab: DnsLab) -> None:
        policy = RiskPolicy(weights={Reason.ROLE_ACCOUNT: -6})
        resolver = DnsResolver([dns_lab.nameserver], timeout=2.0)
        result = await Validator(resolver=resolver, policy=policy).validate("info@acme.test")
        assert (result.verdict, result.score) == (Verdict.RISKY, 69)
        moved = Validator(resolver=resolver, policy=RiskPolicy(valid_threshold=71))
        assert (await moved.validate("info@acme.test")).verdict == Verdict.RISKY

    async def test_implicit_mx(self, validator: Validator) -> None:
        result = await validator.validate("info@nomx.test")
        assert result.verdict != Verdict.INVALID
        assert Reason.MX_FALLBACK_A in result.reasons

    async def test_idn_domain(self, validator: Validator) -> None:
        result = await validator.validate("jürgen@bücher.test")
        assert result.dns is not None
        assert result.dns.status == "ok"

    async def test_dns_timeout_is_unknown(self) -> None:
        with BlackHoleDns() as hole:
            validator = Validator(
                resolver=DnsResolver([hole.nameserver], timeout=0.3, lifetime=0.6)
            )
            result = await validator.validate("john@acme.test")
        assert result.verdict == Verdict.UNKNOWN
        assert Reason.DNS_TIMEOUT in result.reasons

    async def test_validate_many_keeps_order(self, validator: Validator) -> None:
        addresses = ["a@acme.test", "bad", "b@nullmx.test", "c@nomx.test"] * 10
        results = [r async for r in validator.validate_many(addresses, concurrency=3)]
        assert [r.address for r in results] == addresses
        assert results[1].verdict == Verdict.INVALID

    async def test_validate_many_rejects_bad_concurrency(self, validator: Validator) -> None:
        with pytest.raises(ValueError, match="concurrency"):
            [r async for r in validator.validate_many(["a@acme.test"], concurrency=0)]


@given(
    st.builds(
        Evidence,
        syntax_valid=st.sampled_from([True, False, None]),
        disposable=st.sampled_from([True, False, None]),
        role_account=st.sampled_from([True, False, None]),
        free_provider=st.sampled_from([True, False, None]),
        gibberish=st.sampled_from([True, False, None]),
        typo_suggestion=st.one_of(st.none(), st.text(max_size=5)),
    )
)
def test_memoised_assessment_equals_direct(evidence: Evidence) -> None:
    validator = Validator(check_dns=False)
    assert validator._assess(evidence) == assess(evidence)
    assert validator._assess(evidence) == assess(evidence)  # second call served from the memo


_ATOM = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0189._-+'", min_size=1, max_size=20),
    st.sampled_from(["info", "Sales", "no-reply", "postmaster", "xkqzvbnmwpt", "john.smith"]),
    # internationalised local parts, including ones NFC changes (KELVIN SIGN, decomposed umlaut)
    st.text(alphabet="abcüøëжé\u212a\u0308\u3042._+", min_size=1, max_size=20),
    st.sampled_from(["jürgen.müller", "søren", "zoe\u0308", "\u212a", "POSTMA\u212aSTER"]),
)
_DOMAINS = st.sampled_from(
    ["acme.io", "Gmail.com", "gmial.com", "mailinator.com", "yahoo.co.uk", "x.test", "a-b.de"]
)


@given(st.one_of(st.builds("{}@{}".format, _ATOM, _DOMAINS), st.text(max_size=30)))
def test_offline_fast_path_equals_general_path(address: str) -> None:
    validator = Validator(check_dns=False)
    fast = validator.validate_offline(address)
    failure: AddressError | None = None
    try:
        parsed = parse_address(address)
    except AddressError as exc:
        failure = exc
        general = validator.result(address, Evidence(syntax_valid=False), error=str(exc))
    else:
        general = validator.result(address, validator.offline_evidence(parsed), parsed)
    assert fast == general
    if failure is not None:
        assert validator.invalid_syntax(address, failure) == general


# --- no untyped exception for any address string (hardening 11b/12) ------------------------------

_HOSTILE = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.builds(
        '"{}"@{}'.format,
        st.text(
            alphabet=st.sampled_from([*'a <>"\\@', "\t", "\x00", "\r", "\n", "\ud800"]), max_size=8
        ),
        st.sampled_from(["acme.test", "badmx.test", "nothing.test", "bücher.test"]),
    ),
    st.builds("{}@{}".format, _ATOM, st.sampled_from(["acme.test", "nullmx.test", "x.test"])),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_HOSTILE, min_size=1, max_size=4))
async def test_verify_paths_answer_any_text(dns_lab: DnsLab, addresses: list[str]) -> None:
    # Private MX addresses are refused, so the probe ends before any connection.
    prober = lab_prober(allow_private_mx=False)
    validator = Validator(resolver=DnsResolver([dns_lab.nameserver], timeout=2.0))
    for address in addresses:
        result = await verify(address, prober=prober, validator=validator)
        assert result.address == address
    batch = [r.address async for r in verify_many(addresses, prober=prober, validator=validator)]
    assert sorted(batch) == sorted(dict.fromkeys(addresses))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.one_of(
        st.sampled_from(["acme.test", "nothing.test", "nullmx.test"]),
        st.text(st.characters(exclude_categories=()), max_size=20),
    ),
)
async def test_find_answers_any_text(dns_lab: DnsLab, first: str, last: str, domain: str) -> None:
    finder = Finder(
        prober=lab_prober(allow_private_mx=False),
        resolver=DnsResolver([dns_lab.nameserver], timeout=2.0),
    )
    try:
        result = await finder.find(first, last, domain)
    except (AddressError, PersonNameError):
        return
    assert result.found is False
