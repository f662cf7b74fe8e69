"""Risk scoring: totality, the hard-invalid / inconclusive / scored rules, modifiers and policy."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailintel.errors import ConfigError
from emailintel.models import (
    DnsFacts,
    DnsStatus,
    Evidence,
    Reason,
    RiskResult,
    SmtpFacts,
    SmtpReply,
    SmtpStage,
    Verdict,
)
from emailintel.risk import (
    DEFAULT_POLICY,
    DEFAULT_WEIGHTS,
    MODIFIERS,
    Assessment,
    RiskPolicy,
    assess,
)

R = Reason
SMTP_FLAGS = (
    "accepted",
    "catch_all",
    "provider_accepts_all",
    "mailbox_not_found",
    "mailbox_full",
    "mailbox_disabled",
    "greylisted",
    "blocked",
    "temp_failure",
    "connect_failed",
    "timed_out",
    "tls_error",
    "proxy_error",
    "protocol_error",
    "port25_blocked",
    "mx_private_address",
)
HARD_DNS = ("nxdomain", "no_mx", "null_mx", "mx_unresolvable")
RANK = {Verdict.INVALID: 0, Verdict.UNKNOWN: 1, Verdict.RISKY: 2, Verdict.VALID: 3}

TRI = st.none() | st.booleans()
dns_facts = st.builds(
    DnsFacts,
    domain=st.just("example.com"),
    status=st.sampled_from(get_args(DnsStatus)),
    fallback=st.sampled_from([None, "A", "AAAA"]),
    error=st.none() | st.text(max_size=20),
)
replies = st.builds(
    SmtpReply,
    stage=st.sampled_from(get_args(SmtpStage)),
    code=st.none() | st.integers(200, 599),
    enhanced_code=st.none()
    | st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)
    | st.text(max_size=8),
    message=st.text(max_size=30),
)
smtp_facts = st.builds(
    SmtpFacts,
    checked=st.booleans(),
    reply=st.none() | replies,
    **{name: TRI for name in SMTP_FLAGS},
)
evidences = st.builds(
    Evidence,
    syntax_valid=TRI,
    disposable=TRI,
    role_account=TRI,
    free_provider=TRI,
    gibberish=TRI,
    typo_suggestion=st.none() | st.sampled_from(["", " ", "gmail.com"]) | st.text(max_size=10),
    dns=st.none() | dns_facts,
    smtp=st.none() | smtp_facts,
)


@st.composite
def policies(draw: st.DrawFn, *, penalties_only: bool = False) -> RiskPolicy:
    """Valid policies with random weights, bases and bands."""
    weight = st.integers(-100, 100)
    weights = draw(st.dictionaries(st.sampled_from(list(Reason)), weight, max_size=8))
    if penalties_only:
        weights = {r: (-abs(w) if r in MODIFIERS else w) for r, w in weights.items()}
    threshold = draw(st.integers(2, 100))
    unknown_cap = draw(st.integers(1, threshold - 1))
    invalid_cap = draw(st.integers(0, unknown_cap))
    bases = st.fixed_dictionaries(
        {},
        optional={k: st.integers(0, 100) for k in ("smtp_accepted", "catch_all", "dns_only")},
    )
    return RiskPolicy(
        weights=weights,
        base=draw(bases),
        valid_threshold=threshold,
        unknown_cap=unknown_cap,
        invalid_cap=invalid_cap,
        role_is_risky=draw(st.booleans()),
    )


any_policy = st.just(DEFAULT_POLICY) | policies()


def dns(status: DnsStatus = "ok", fallback: Any = None) -> DnsFacts:
    return DnsFacts(domain="example.com", status=status, fallback=fallback)


def rcpt(code: int, enhanced: str | None) -> SmtpReply:
    return SmtpReply(stage="rcpt", code=code, enhanced_code=enhanced, message="reply")


def probed(**facts: Any) -> Evidence:
    """Syntax ok, MX found, and an SMTP probe that learned ``facts``."""
    return Evidence(syntax_valid=True, dns=dns(), smtp=SmtpFacts(checked=True, **facts))


def mx_only(**facts: Any) -> Evidence:
    """Syntax ok, MX found, SMTP not checked (what validate() produces)."""
    return Evidence(syntax_valid=True, dns=dns(), smtp=SmtpFacts(checked=False), **facts)


DELIVERABLE = {"accepted": True, "catch_all": False}


def check_invariants(result: Assessment, policy: RiskPolicy) -> None:
    assert result.verdict in set(Verdict)
    assert 0 <= result.score <= 100
    assert result.reasons
    assert len(set(result.reasons)) == len(result.reasons)
    if result.verdict is Verdict.INVALID:
        assert result.score <= policy.invalid_cap
    elif result.verdict is Verdict.UNKNOWN:
        assert result.score <= policy.unknown_cap
    elif result.verdict is Verdict.VALID:
        assert result.score >= policy.valid_threshold
    else:
        assert result.score < policy.valid_threshold


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(evidences, any_policy)
def test_assess_is_total_bounded_and_deterministic(evidence: Evidence, policy: RiskPolicy) -> None:
    result = assess(evidence, policy)
    check_invariants(result, policy)
    assert assess(evidence.model_copy(deep=True), policy) == result
    non_modifiers = [r for r in result.reasons if r not in MODIFIERS]
    assert list(result.reasons) == non_modifiers + [r for r in result.reasons if r in MODIFIERS]


def test_every_single_fact_combination_is_total() -> None:
    dns_options: list[DnsFacts | None] = [None, dns(fallback="A")]
    dns_options += [dns(status) for status in get_args(DnsStatus)]
    smtp_options: list[SmtpFacts | None] = [None, SmtpFacts(checked=True), SmtpFacts()]
    smtp_options += [
        SmtpFacts(checked=True, **{flag: value})
        for flag, value in itertools.product(SMTP_FLAGS, (True, False))
    ]
    combos = itertools.product((None, True, False), dns_options, smtp_options)
    seen = set()
    for syntax, dns_facts_, smtp in combos:
        result = assess(Evidence(syntax_valid=syntax, dns=dns_facts_, smtp=smtp))
        check_invariants(result, DEFAULT_POLICY)
        seen.add(result.verdict)
    assert seen == set(Verdict)


@settings(deadline=None)
@given(
    evidences,
    smtp_facts,
    st.sampled_from([None, True]),
    st.none() | st.sampled_from([dns(s) for s in ("ok", "timeout", "error")]),
    any_policy,
)
def test_blocked_by_server_never_yields_invalid(
    evidence: Evidence,
    smtp: SmtpFacts,
    syntax: bool | None,
    dns_facts_: DnsFacts | None,
    policy: RiskPolicy,
) -> None:
    blocked = smtp.model_copy(update={"blocked": True})
    case = evidence.model_copy(update={"syntax_valid": syntax, "dns": dns_facts_, "smtp": blocked})
    result = assess(case, policy)
    assert result.verdict is not Verdict.INVALID
    assert R.MAILBOX_NOT_FOUND not in result.reasons
    assert R.BLOCKED_BY_SERVER in result.reasons


HARD_FACTS: list[tuple[str, dict[str, Any], Reason]] = [
    ("evidence", {"syntax_valid": False}, R.SYNTAX_INVALID),
    ("dns", {"status": "nxdomain"}, R.DOMAIN_NOT_FOUND),
    ("dns", {"status": "no_mx"}, R.NO_MX),
    ("dns", {"status": "null_mx"}, R.NULL_MX),
    ("dns", {"status": "mx_unresolvable"}, R.MX_UNRESOLVABLE),
    ("smtp", {"mailbox_not_found": True, "blocked": None}, R.MAILBOX_NOT_FOUND),
    ("smtp", {"mailbox_disabled": True, "blocked": False}, R.MAILBOX_DISABLED),
    (
        "smtp",
        {"accepted": False, "blocked": None, "reply": rcpt(550, "5.1.1")},
        R.MAILBOX_NOT_FOUND,
    ),
]


@settings(deadline=None)
@given(evidences, smtp_facts, st.sampled_from(HARD_FACTS), any_policy)
def test_a_hard_invalid_fact_always_yields_invalid(
    evidence: Evidence,
    smtp: SmtpFacts,
    hard: tuple[str, dict[str, Any], Reason],
    policy: RiskPolicy,
) -> None:
    where, update, reason = hard
    if where == "evidence":
        case = evidence.model_copy(update=update)
    elif where == "dns":
        case = evidence.model_copy(update={"dns": dns().model_copy(update=update)})
    else:
        case = evidence.model_copy(update={"smtp": smtp.model_copy(update=update)})
    result = assess(case, policy)
    assert result.verdict is Verdict.INVALID
    assert reason in result.reasons
    assert result.reasons[0] not in MODIFIERS


PENALTIES: list[dict[str, Any]] = [
    {"disposable": True},
    {"role_account": True},
    {"gibberish": True},
    {"free_provider": True},
    {"typo_suggestion": "gmail.com"},
]


@settings(deadline=None)
@given(
    evidences,
    st.sampled_from(PENALTIES),
    st.just(DEFAULT_POLICY) | policies(penalties_only=True),
)
def test_adding_a_penalty_modifier_never_raises_score_or_verdict(
    evidence: Evidence, penalty: dict[str, Any], policy: RiskPolicy
) -> None:
    before = assess(evidence, policy)
    after = assess(evidence.model_copy(update=penalty), policy)
    assert after.score <= before.score
    assert RANK[after.verdict] <= RANK[before.verdict]


@settings(deadline=None)
@given(evidences, st.just(DEFAULT_POLICY) | policies(penalties_only=True))
def test_implicit_mx_fallback_never_raises_score(evidence: Evidence, policy: RiskPolicy) -> None:
    before = assess(evidence.model_copy(update={"dns": dns()}), policy)
    after = assess(evidence.model_copy(update={"dns": dns(fallback="A")}), policy)
    assert after.score <= before.score
    assert R.MX_FALLBACK_A in after.reasons


# --- one crafted example per reason code ----------------------------------------------------

EXAMPLES: dict[Reason, tuple[Evidence, Verdict]] = {
    R.SYNTAX_INVALID: (Evidence(syntax_valid=False), Verdict.INVALID),
    R.TYPO_SUSPECTED: (mx_only(typo_suggestion="jane@gmail.com"), Verdict.RISKY),
    R.DISPOSABLE: (mx_only(disposable=True), Verdict.RISKY),
    R.ROLE_ACCOUNT: (
        probed(**DELIVERABLE).model_copy(update={"role_account": True}),
        Verdict.VALID,
    ),
    R.FREE_PROVIDER: (mx_only(free_provider=True), Verdict.VALID),
    R.GIBBERISH_LOCAL_PART: (mx_only(gibberish=True), Verdict.RISKY),
    R.DOMAIN_NOT_FOUND: (Evidence(syntax_valid=True, dns=dns("nxdomain")), Verdict.INVALID),
    R.NO_MX: (Evidence(syntax_valid=True, dns=dns("no_mx")), Verdict.INVALID),
    R.NULL_MX: (Evidence(syntax_valid=True, dns=dns("null_mx")), Verdict.INVALID),
    R.MX_UNRESOLVABLE: (Evidence(syntax_valid=True, dns=dns("mx_unresolvable")), Verdict.INVALID),
    R.MX_FALLBACK_A: (Evidence(syntax_valid=True, dns=dns(fallback="A")), Verdict.RISKY),
    R.DNS_TIMEOUT: (Evidence(syntax_valid=True, dns=dns("timeout")), Verdict.UNKNOWN),
    R.DNS_ERROR: (Evidence(syntax_valid=True, dns=dns("error")), Verdict.UNKNOWN),
    R.DNS_NOT_CHECKED: (Evidence(syntax_valid=True), Verdict.UNKNOWN),
    R.MX_PRIVATE_ADDRESS: (probed(mx_private_address=True), Verdict.UNKNOWN),
    R.SMTP_ACCEPTED: (probed(**DELIVERABLE), Verdict.VALID),
    R.SMTP_NOT_CHECKED: (mx_only(), Verdict.VALID),
    R.SMTP_INCONCLUSIVE: (probed(), Verdict.UNKNOWN),
    R.MAILBOX_NOT_FOUND: (probed(accepted=False, mailbox_not_found=True), Verdict.INVALID),
    R.MAILBOX_FULL: (probed(accepted=False, mailbox_full=True), Verdict.RISKY),
    R.MAILBOX_DISABLED: (probed(accepted=False, mailbox_disabled=True), Verdict.INVALID),
    R.CATCH_ALL: (probed(accepted=True, catch_all=True), Verdict.RISKY),
    R.CATCH_ALL_INCONCLUSIVE: (probed(accepted=True), Verdict.VALID),
    R.PROVIDER_ACCEPTS_ALL: (probed(accepted=True, provider_accepts_all=True), Verdict.RISKY),
    R.GREYLISTED: (probed(greylisted=True), Verdict.UNKNOWN),
    R.TEMP_FAILURE: (probed(temp_failure=True), Verdict.UNKNOWN),
    R.BLOCKED_BY_SERVER: (probed(accepted=False, blocked=True), Verdict.UNKNOWN),
    R.CONNECT_FAILED: (probed(connect_failed=True), Verdict.UNKNOWN),
    R.PORT25_BLOCKED: (
        Evidence(syntax_valid=True, dns=dns(), smtp=SmtpFacts(port25_blocked=True)),
        Verdict.UNKNOWN,
    ),
    R.TIMEOUT: (probed(timed_out=True), Verdict.UNKNOWN),
    R.TLS_ERROR: (probed(tls_error=True), Verdict.UNKNOWN),
    R.PROXY_ERROR: (probed(proxy_error=True), Verdict.UNKNOWN),
    R.SMTP_PROTOCOL_ERROR: (probed(protocol_error=True), Verdict.UNKNOWN),
}


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_code_is_produced_by_some_evidence(reason: Reason) -> None:
    assert reason in EXAMPLES, f"no scoring rule / example for new reason {reason!r}"
    evidence, verdict = EXAMPLES[reason]
    result = assess(evidence)
    assert reason in result.reasons
    assert result.verdict is verdict
    if reason not in MODIFIERS:
        assert result.reasons[0] is reason or verdict in (Verdict.VALID, Verdict.RISKY)


# --- scored verdicts and modifiers ----------------------------------------------------------

W = DEFAULT_WEIGHTS
BASE = DEFAULT_POLICY.base


def test_deliverable_role_address_stays_valid_with_role_reason() -> None:
    result = assess(probed(**DELIVERABLE).model_copy(update={"role_account": True}))
    assert result.verdict is Verdict.VALID
    assert result.reasons == (R.SMTP_ACCEPTED, R.ROLE_ACCOUNT)
    assert result.score == BASE.smtp_accepted + W[R.ROLE_ACCOUNT]


def test_undeliverable_role_address_is_invalid() -> None:
    evidence = probed(accepted=False, reply=rcpt(550, "5.1.1")).model_copy(
        update={"role_account": True}
    )
    result = assess(evidence)
    assert result.verdict is Verdict.INVALID
    assert result.reasons == (R.MAILBOX_NOT_FOUND, R.ROLE_ACCOUNT)


def test_deliverable_disposable_address_is_risky() -> None:
    result = assess(probed(**DELIVERABLE).model_copy(update={"disposable": True}))
    assert result.verdict is Verdict.RISKY
    assert result.score == BASE.smtp_accepted + W[R.DISPOSABLE]
    assert result.reasons == (R.SMTP_ACCEPTED, R.DISPOSABLE)


def test_typo_suggestion_alone_with_mx_is_not_invalid() -> None:
    result = assess(mx_only(typo_suggestion="jane@gmail.com"))
    assert result.verdict is Verdict.RISKY
    assert result.reasons == (R.SMTP_NOT_CHECKED, R.TYPO_SUSPECTED)


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_typo_suggestion_is_no_typo(blank: str) -> None:
    assert R.TYPO_SUSPECTED not in assess(mx_only(typo_suggestion=blank)).reasons


def test_dns_timeout_is_unknown_never_silently_deliverable() -> None:
    result = assess(Evidence(syntax_valid=True, dns=dns("timeout"), smtp=SmtpFacts()))
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is R.DNS_TIMEOUT
    assert result.score == DEFAULT_POLICY.unknown_cap


def test_smtp_answer_outranks_dns_trouble_and_earlier_greylisting() -> None:
    evidence = probed(greylisted=True, **DELIVERABLE).model_copy(update={"dns": dns("timeout")})
    result = assess(evidence)
    assert result.verdict is Verdict.VALID
    assert result.reasons == (R.SMTP_ACCEPTED, R.DNS_TIMEOUT, R.GREYLISTED)


def test_lowest_level_base_wins_when_several_apply() -> None:
    result = assess(probed(accepted=True, catch_all=True, provider_accepts_all=True))
    assert result.score == min(BASE.catch_all, BASE.provider_accepts_all)
    assert result.reasons[:3] == (R.SMTP_ACCEPTED, R.CATCH_ALL, R.PROVIDER_ACCEPTS_ALL)


def test_nothing_known_is_unknown() -> None:
    result = assess(Evidence())
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons == (R.DNS_NOT_CHECKED, R.SMTP_NOT_CHECKED)


def test_modifiers_lower_the_invalid_band_but_stay_in_it() -> None:
    plain = assess(Evidence(syntax_valid=False))
    worse = assess(Evidence(syntax_valid=False, disposable=True, gibberish=True))
    assert plain.score == DEFAULT_POLICY.invalid_cap
    assert worse.score == max(
        0, DEFAULT_POLICY.invalid_cap + W[R.DISPOSABLE] + W[R.GIBBERISH_LOCAL_PART]
    )
    assert worse.reasons == (R.SYNTAX_INVALID, R.DISPOSABLE, R.GIBBERISH_LOCAL_PART)


# --- refused RCPT without an explaining fact ------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "verdict", "reason"),
    [
        (rcpt(550, "5.1.1"), Verdict.INVALID, R.MAILBOX_NOT_FOUND),
        (rcpt(550, "5.1.10"), Verdict.INVALID, R.MAILBOX_NOT_FOUND),
        (rcpt(553, "5.1.8"), Verdict.UNKNOWN, R.SMTP_INCONCLUSIVE),
        (rcpt(550, "5.7.1"), Verdict.UNKNOWN, R.BLOCKED_BY_SERVER),
        (rcpt(554, "5.7.606"), Verdict.UNKNOWN, R.BLOCKED_BY_SERVER),
        (rcpt(450, "4.2.0"), Verdict.UNKNOWN, R.TEMP_FAILURE),
        (rcpt(451, None), Verdict.UNKNOWN, R.TEMP_FAILURE),
        (rcpt(550, None), Verdict.UNKNOWN, R.SMTP_INCONCLUSIVE),
        (rcpt(550, "garbage"), Verdict.UNKNOWN, R.SMTP_INCONCLUSIVE),
        (SmtpReply(stage="mail", code=550, enhanced_code="5.1.1"), Verdict.UNKNOWN, None),
        (None, Verdict.UNKNOWN, R.SMTP_INCONCLUSIVE),
    ],
)
def test_refused_rcpt_is_read_from_its_reply(
    reply: SmtpReply | None, verdict: Verdict, reason: Reason | None
) -> None:
    result = assess(probed(accepted=False, reply=reply))
    assert result.verdict is verdict
    if reason is not None:
        assert result.reasons[0] is reason
    if verdict is not Verdict.INVALID:
        assert R.MAILBOX_NOT_FOUND not in result.reasons


def test_unknown_user_reply_while_blocked_is_not_trusted() -> None:
    result = assess(probed(accepted=False, blocked=True, reply=rcpt(550, "5.1.1")))
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons == (R.BLOCKED_BY_SERVER,)


def test_full_mailbox_explains_a_refusal() -> None:
    result = assess(probed(accepted=False, mailbox_full=True, reply=rcpt(552, "5.2.2")))
    assert result.verdict is Verdict.RISKY
    assert result.score == BASE.mailbox_full


# --- policy ---------------------------------------------------------------------------------


def test_custom_weights_change_the_verdict() -> None:
    evidence = probed(**DELIVERABLE).model_copy(update={"role_account": True})
    strict = RiskPolicy.from_mapping({"weights": {"role_account": -40}})
    assert assess(evidence).verdict is Verdict.VALID
    result = assess(evidence, strict)
    assert result.verdict is Verdict.RISKY
    assert result.score == BASE.smtp_accepted - 40


def test_weight_overrides_merge_over_defaults() -> None:
    policy = RiskPolicy.from_mapping({"weights": {"disposable": -10}})
    assert policy.weights[R.DISPOSABLE] == -10
    assert {r: w for r, w in policy.weights.items() if r is not R.DISPOSABLE} == {
        r: w for r, w in W.items() if r is not R.DISPOSABLE
    }


def test_custom_bases_and_threshold_change_the_verdict() -> None:
    catch_all = probed(accepted=True, catch_all=True)
    trusting = RiskPolicy.from_mapping({"base": {"catch_all": 90}})
    assert assess(catch_all).verdict is Verdict.RISKY
    assert assess(catch_all, trusting).verdict is Verdict.VALID
    picky = RiskPolicy(valid_threshold=BASE.dns_only + 1)
    assert assess(mx_only()).verdict is Verdict.VALID
    assert assess(mx_only(), picky).verdict is Verdict.RISKY


def test_custom_caps_bound_the_unknown_and_invalid_bands() -> None:
    policy = RiskPolicy(invalid_cap=0, unknown_cap=20)
    assert assess(Evidence(syntax_valid=False), policy).score == 0
    assert assess(probed(greylisted=True), policy).score == 20


def test_role_is_risky_option_reproduces_reacher() -> None:
    policy = RiskPolicy(role_is_risky=True)
    role = assess(probed(**DELIVERABLE).model_copy(update={"role_account": True}), policy)
    assert role.verdict is Verdict.RISKY
    assert role.score == policy.valid_threshold - 1
    assert R.ROLE_ACCOUNT in role.reasons
    assert assess(probed(**DELIVERABLE), policy).verdict is Verdict.VALID


def test_policy_round_trips_through_a_config_mapping() -> None:
    policy = RiskPolicy(weights={R.FREE_PROVIDER: -3}, valid_threshold=80, role_is_risky=True)
    assert RiskPolicy.from_mapping(policy.model_dump(mode="json")) == policy


@pytest.mark.parametrize(
    "config",
    [
        {"valid_threshold": 101},
        {"valid_threshold": -1},
        {"valid_threshold": 40},  # below the default unknown cap
        {"invalid_cap": 60},  # above the unknown cap
        {"unknown_cap": 70},  # not below the threshold
        {"weights": {"role_account": -101}},
        {"weights": {"role_account": True}},
        {"weights": {"role_account": 1.5}},
        {"weights": {"not_a_reason": -5}},
        {"weights": [("role_account", -5)]},
        {"base": {"dns_only": 150}},
        {"base": {"smtp": 90}},
        {"valid_threshold": "70"},
        {"role_is_risky": "sometimes"},
        {"thresholds": 70},
    ],
)
def test_invalid_policy_raises_config_error(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="invalid risk policy"):
        RiskPolicy.from_mapping(config)
    with pytest.raises(ConfigError):
        RiskPolicy(**config)


def test_from_mapping_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        RiskPolicy.from_mapping([("valid_threshold", 70)])  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="valid_threshold"):
        RiskPolicy(valid_threshold=200)


# --- docs/verdicts.md stays true --------------------------------------------------------------

DOC = (Path(__file__).resolve().parents[2] / "docs" / "verdicts.md").read_text(encoding="utf-8")


def test_docs_map_every_reason_code() -> None:
    mapped = set(re.findall(r"^\| `(\w+)` \| (?:valid|risky|invalid|unknown|modifier)", DOC, re.M))
    assert mapped == {reason.value for reason in Reason}


def test_docs_default_policy_table_matches_the_code() -> None:
    rows = dict(re.findall(r"^\| `([\w.]+)` \| (-?\d+) \|", DOC, re.M))
    documented = {key: int(value) for key, value in rows.items()}
    expected = {f"base.{k}": v for k, v in DEFAULT_POLICY.base.model_dump().items()}
    expected |= {k: getattr(DEFAULT_POLICY, k) for k in ("valid_threshold", "unknown_cap")}
    expected["invalid_cap"] = DEFAULT_POLICY.invalid_cap
    assert documented == expected


def test_docs_default_weights_match_the_code() -> None:
    paragraph = DOC[DOC.index("Default weights are") :].split("\n\n")[0]
    documented = {
        r: int(w.replace("−", "-")) for r, w in re.findall(r"`(\w+)` ([−-]?\d+)", paragraph)
    }
    assert documented == {r.value: w for r, w in DEFAULT_WEIGHTS.items() if r in MODIFIERS}
    assert all(w == 0 for r, w in DEFAULT_WEIGHTS.items() if r not in MODIFIERS)


def test_docs_json_example_is_a_result_the_scorer_reproduces() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOC, re.S)
    result = RiskResult.model_validate_json(blocks[-1])
    evidence = Evidence(
        syntax_valid=result.normalized is not None,
        disposable=result.disposable,
        role_account=result.role_account,
        free_provider=result.free_provider,
        typo_suggestion=result.suggestion,
        dns=result.dns,
        smtp=result.smtp,
    )
    assert assess(evidence) == Assessment(
        verdict=result.verdict, score=result.score, reasons=result.reasons
    )
    config = json.loads(blocks[0])
    policy = RiskPolicy.from_mapping(config)
    assert policy.weights[R.ROLE_ACCOUNT] == config["weights"]["role_account"]
    assert policy.valid_threshold == config["valid_threshold"]
