"""Risk scoring: tri-state :class:`Evidence` -> verdict, 0-100 score and ordered reasons.

Pure and total: any evidence (every fact ``True``/``False``/``None``, DNS and SMTP possibly
absent) yields an :class:`Assessment`; nothing here raises or does I/O. A fact that is ``None``
was not learned and never counts as passed. The rules run in this order:

1. **Hard invalid** -> ``invalid`` (score in ``0..invalid_cap``): syntax invalid, NXDOMAIN,
   null MX, no MX and no A/AAAA fallback, MX hosts without any address, mailbox not found (``mailbox_not_found`` fact or a
   refused RCPT answered with a permanent 5.1.x code), mailbox disabled. An SMTP rejection is not
   trusted while the server was blocking us (``blocked``): policy refusals are never ``invalid``.
2. **A mailbox-level SMTP answer** -> scored: accepted, catch-all, provider accepts all, mailbox
   full. The lowest matching base wins (a catch-all acceptance proves little). Such an answer
   outranks DNS or SMTP trouble seen on the way (a greylist that later let us through).
3. **Inconclusive** -> ``unknown`` (score in ``0..unknown_cap``): DNS timeout/error/not checked,
   greylisting, temporary failures, blocks, connect/TLS/proxy/protocol errors, timeouts, port 25
   blocked, private MX addresses we refused to dial, or a probe that learned nothing.
4. **DNS only** (MX found, SMTP not checked) -> scored from the ``dns_only`` base.

A scored result is ``base + sum(weights of its reasons)`` clamped to 0..100; it is ``valid`` at
or above ``valid_threshold`` and ``risky`` below. Role, disposable, free, typo and gibberish are
weighted modifiers, never overrides (a deliverable role address stays ``valid`` unless
``role_is_risky``). Reasons come decisive first, then other observed facts, then modifiers, each
group in :class:`Reason` order; an invalid result omits the "not checked" reasons. The mapping to
other vendors' labels is in docs/verdicts.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emailintel.errors import ConfigError
from emailintel.models import DnsFacts, Evidence, Reason, SmtpFacts, SmtpReply, Verdict

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_WEIGHTS",
    "HARD_INVALID",
    "INCONCLUSIVE",
    "MODIFIERS",
    "Assessment",
    "BaseScores",
    "RiskPolicy",
    "assess",
]

R = Reason

MODIFIERS: frozenset[Reason] = frozenset(
    {
        R.TYPO_SUSPECTED,
        R.DISPOSABLE,
        R.ROLE_ACCOUNT,
        R.FREE_PROVIDER,
        R.GIBBERISH_LOCAL_PART,
        R.MX_FALLBACK_A,
        R.CATCH_ALL_INCONCLUSIVE,
    }
)
HARD_INVALID: frozenset[Reason] = frozenset(
    {
        R.SYNTAX_INVALID,
        R.DOMAIN_NOT_FOUND,
        R.NO_MX,
        R.NULL_MX,
        R.MX_UNRESOLVABLE,
        R.MAILBOX_NOT_FOUND,
        R.MAILBOX_DISABLED,
    }
)
INCONCLUSIVE: frozenset[Reason] = frozenset(
    {
        R.DNS_TIMEOUT,
        R.DNS_ERROR,
        R.DNS_NOT_CHECKED,
        R.MX_PRIVATE_ADDRESS,
        R.SMTP_INCONCLUSIVE,
        R.GREYLISTED,
        R.TEMP_FAILURE,
        R.BLOCKED_BY_SERVER,
        R.CONNECT_FAILED,
        R.PORT25_BLOCKED,
        R.TIMEOUT,
        R.TLS_ERROR,
        R.PROXY_ERROR,
        R.SMTP_PROTOCOL_ERROR,
    }
)

_DEFAULT_MODIFIER_WEIGHTS: dict[Reason, int] = {
    R.TYPO_SUSPECTED: -30,
    R.DISPOSABLE: -40,
    R.ROLE_ACCOUNT: -5,
    R.FREE_PROVIDER: 0,
    R.GIBBERISH_LOCAL_PART: -15,
    R.MX_FALLBACK_A: -10,
    R.CATCH_ALL_INCONCLUSIVE: -10,
}
DEFAULT_WEIGHTS: Mapping[Reason, int] = MappingProxyType(
    {reason: _DEFAULT_MODIFIER_WEIGHTS.get(reason, 0) for reason in Reason}
)

_DNS_STATUS_REASON: Mapping[str, Reason] = MappingProxyType(
    {
        "nxdomain": R.DOMAIN_NOT_FOUND,
        "no_mx": R.NO_MX,
        "null_mx": R.NULL_MX,
        "mx_unresolvable": R.MX_UNRESOLVABLE,
        "timeout": R.DNS_TIMEOUT,
        "error": R.DNS_ERROR,
    }
)
_RANK: Mapping[Reason, int] = MappingProxyType({reason: i for i, reason in enumerate(Reason)})
# 5.1.7 / 5.1.8 are about *our* sender address, not the recipient.
_UNKNOWN_USER_CODE = re.compile(r"5\.1\.(?!7$|8$)\d{1,3}")

Score = Annotated[int, Field(strict=True, ge=0, le=100)]
Weight = Annotated[int, Field(strict=True, ge=-100, le=100)]


class BaseScores(BaseModel):
    """Starting score of each evidence level before modifier weights are added."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    smtp_accepted: Score = 95
    catch_all: Score = 55
    provider_accepts_all: Score = 50
    mailbox_full: Score = 35
    dns_only: Score = 75

    def of(self, level: Reason) -> int:
        """The base score of one level reason (``smtp_not_checked`` stands for DNS only)."""
        bases = {
            R.SMTP_ACCEPTED: self.smtp_accepted,
            R.CATCH_ALL: self.catch_all,
            R.PROVIDER_ACCEPTS_ALL: self.provider_accepts_all,
            R.MAILBOX_FULL: self.mailbox_full,
            R.SMTP_NOT_CHECKED: self.dns_only,
        }
        return bases[level]


class RiskPolicy(BaseModel):
    """Tunable scoring: reason weights (merged over defaults), bases, threshold and band caps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: Mapping[Reason, Weight] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    base: BaseScores = BaseScores()
    valid_threshold: Score = 70
    invalid_cap: Score = 10
    unknown_cap: Score = 50
    role_is_risky: bool = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc

    @field_validator("weights", mode="after")
    @classmethod
    def _merge_defaults(cls, weights: Mapping[Reason, int]) -> Mapping[Reason, int]:
        return {**DEFAULT_WEIGHTS, **weights}

    @model_validator(mode="after")
    def _check_bands(self) -> Self:
        if not self.invalid_cap <= self.unknown_cap < self.valid_threshold:
            raise ValueError(
                "need invalid_cap <= unknown_cap < valid_threshold, got "
                f"{self.invalid_cap}, {self.unknown_cap}, {self.valid_threshold}"
            )
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RiskPolicy:
        """Build a policy from a config-file mapping (reason names as weight keys)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"risk policy must be a mapping, got {type(data).__name__}")
        return cls(**data)


def _describe(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}" for err in exc.errors()
    ]
    return "invalid risk policy: " + "; ".join(parts)


DEFAULT_POLICY = RiskPolicy()


class Assessment(BaseModel):
    """The scorer's answer: verdict, score (higher = more likely deliverable), ordered reasons."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    score: Score
    reasons: tuple[Reason, ...]


class _Reading(NamedTuple):
    """Reasons observed in the evidence plus the mailbox-level SMTP answers (scoring levels)."""

    observed: frozenset[Reason]
    levels: frozenset[Reason]


def _list_reasons(evidence: Evidence) -> set[Reason]:
    flags = (
        (evidence.syntax_valid is False, R.SYNTAX_INVALID),
        (bool(evidence.typo_suggestion and evidence.typo_suggestion.strip()), R.TYPO_SUSPECTED),
        (evidence.disposable is True, R.DISPOSABLE),
        (evidence.role_account is True, R.ROLE_ACCOUNT),
        (evidence.free_provider is True, R.FREE_PROVIDER),
        (evidence.gibberish is True, R.GIBBERISH_LOCAL_PART),
    )
    return {reason for hit, reason in flags if hit}


def _dns_reasons(dns: DnsFacts | None) -> set[Reason]:
    if dns is None:
        return {R.DNS_NOT_CHECKED}
    if dns.status == "ok":
        return {R.MX_FALLBACK_A} if dns.fallback is not None else set()
    return {_DNS_STATUS_REASON[dns.status]}


def _rejection_reason(reply: SmtpReply | None) -> Reason:
    """Best reading of a refused RCPT that no fact explains; never an invalid verdict."""
    code = reply.code if reply else None
    enhanced = (reply.enhanced_code or "") if reply else ""
    if (code is not None and 400 <= code < 500) or enhanced.startswith("4."):
        return R.TEMP_FAILURE
    if enhanced.startswith("5.7."):
        return R.BLOCKED_BY_SERVER
    return R.SMTP_INCONCLUSIVE


def _is_unknown_user_reply(smtp: SmtpFacts) -> bool:
    reply = smtp.reply
    return (
        smtp.accepted is False
        and reply is not None
        and reply.stage == "rcpt"
        and reply.code is not None
        and 500 <= reply.code < 600
        and reply.enhanced_code is not None
        and _UNKNOWN_USER_CODE.fullmatch(reply.enhanced_code) is not None
    )


def _read_smtp(smtp: SmtpFacts | None) -> _Reading:
    if smtp is None:
        return _Reading(observed=frozenset({R.SMTP_NOT_CHECKED}), levels=frozenset())
    flags = (
        (smtp.accepted, R.SMTP_ACCEPTED),
        (smtp.catch_all, R.CATCH_ALL),
        (smtp.provider_accepts_all, R.PROVIDER_ACCEPTS_ALL),
        (smtp.mailbox_full, R.MAILBOX_FULL),
        (smtp.greylisted, R.GREYLISTED),
        (smtp.temp_failure, R.TEMP_FAILURE),
        (smtp.blocked, R.BLOCKED_BY_SERVER),
        (smtp.connect_failed, R.CONNECT_FAILED),
        (smtp.port25_blocked, R.PORT25_BLOCKED),
        (smtp.timed_out, R.TIMEOUT),
        (smtp.tls_error, R.TLS_ERROR),
        (smtp.proxy_error, R.PROXY_ERROR),
        (smtp.protocol_error, R.SMTP_PROTOCOL_ERROR),
        (smtp.mx_private_address, R.MX_PRIVATE_ADDRESS),
    )
    observed = {reason for value, reason in flags if value is True}
    if smtp.blocked is not True:
        if smtp.mailbox_not_found is True or _is_unknown_user_reply(smtp):
            observed.add(R.MAILBOX_NOT_FOUND)
        if smtp.mailbox_disabled is True:
            observed.add(R.MAILBOX_DISABLED)
    levels = {R.MAILBOX_FULL} & observed
    if smtp.accepted is not False:
        levels |= {R.SMTP_ACCEPTED, R.CATCH_ALL, R.PROVIDER_ACCEPTS_ALL} & observed
    if smtp.accepted is True and smtp.catch_all is None and smtp.provider_accepts_all is not True:
        observed.add(R.CATCH_ALL_INCONCLUSIVE)
    explained = observed & (HARD_INVALID | INCONCLUSIVE | {R.MAILBOX_FULL})
    if smtp.accepted is False and not explained:
        observed.add(_rejection_reason(smtp.reply))
    elif not (levels or explained):
        observed.add(R.SMTP_INCONCLUSIVE if smtp.checked else R.SMTP_NOT_CHECKED)
    return _Reading(observed=frozenset(observed), levels=frozenset(levels))


def _ordered(decisive: Iterable[Reason], observed: Iterable[Reason]) -> tuple[Reason, ...]:
    first = set(decisive)
    rest = set(observed) - first
    groups = (first, rest - MODIFIERS, rest & MODIFIERS)
    return tuple(reason for group in groups for reason in sorted(group, key=_RANK.__getitem__))


def _weight(policy: RiskPolicy, reasons: Iterable[Reason]) -> int:
    return sum(policy.weights[reason] for reason in reasons)


def _clamp(value: int, high: int) -> int:
    return max(0, min(high, value))


def assess(evidence: Evidence, policy: RiskPolicy | None = None) -> Assessment:
    """Score the evidence under ``policy`` (defaults if ``None``); total and deterministic."""
    policy = policy or DEFAULT_POLICY
    smtp = _read_smtp(evidence.smtp)
    observed = _list_reasons(evidence) | _dns_reasons(evidence.dns) | set(smtp.observed)

    if hard := observed & HARD_INVALID:
        # What was never looked at adds nothing to an address that is already invalid.
        observed -= {R.DNS_NOT_CHECKED, R.SMTP_NOT_CHECKED}
        verdict, decisive = Verdict.INVALID, hard
        score = _clamp(policy.invalid_cap + _weight(policy, observed), policy.invalid_cap)
    elif smtp.levels or not observed & INCONCLUSIVE:
        decisive = set(smtp.levels) or {R.SMTP_NOT_CHECKED}
        base = min(policy.base.of(level) for level in decisive)
        score = _clamp(base + _weight(policy, observed), 100)
        verdict = Verdict.VALID if score >= policy.valid_threshold else Verdict.RISKY
        if verdict is Verdict.VALID and policy.role_is_risky and R.ROLE_ACCOUNT in observed:
            verdict, score = Verdict.RISKY, _clamp(policy.valid_threshold - 1, 100)
    else:
        verdict, decisive = Verdict.UNKNOWN, observed & INCONCLUSIVE
        score = _clamp(policy.unknown_cap + _weight(policy, observed), policy.unknown_cap)
    return Assessment(verdict=verdict, score=score, reasons=_ordered(decisive, observed))
