"""Classify one SMTP reply into what it says about the mailbox, the server, or our probe.

Pure and table-driven: RFC 3463 enhanced status codes decide first, text patterns second, the
basic reply code last. Policy and blocklist replies (x.7.x, "Spamhaus", "blocked", ...) are never
read as "mailbox not found", because that turns a refused probe into a false ``invalid``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, get_args

from pydantic import BaseModel, ConfigDict

from emailintel.errors import EmailIntelError
from emailintel.models import Reason, SmtpReply, SmtpStage
from emailintel.smtp.wire import parse_enhanced_code

__all__ = [
    "DEFAULT_GREYLIST_RETRY",
    "MAX_RETRY_AFTER",
    "ReplyClass",
    "ReplyCodeError",
    "ReplyKind",
    "classify",
    "classify_reply",
    "parse_enhanced_code",
    "parse_retry_after",
]

DEFAULT_GREYLIST_RETRY: Final = 300.0
"""Seconds to wait before retrying a greylisted recipient when the reply names no delay."""

MAX_RETRY_AFTER: Final = 86_400.0
"""A parsed delay is capped at one day so a silly reply cannot park a probe forever."""

_STAGES: Final[frozenset[str]] = frozenset(get_args(SmtpStage))


class ReplyCodeError(EmailIntelError, ValueError):
    """A reply code or enhanced status code that is not a valid SMTP value."""


class ReplyKind(StrEnum):
    """What a reply means for the probe."""

    ACCEPTED = "accepted"  # 2xx/3xx to RCPT: the server takes this recipient
    OK = "ok"  # 2xx/3xx at any other stage: carry on
    MAILBOX_NOT_FOUND = "mailbox_not_found"
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_DISABLED = "mailbox_disabled"
    BLOCKED = "blocked"  # the server refuses *us* (blocklist, policy, rDNS, relay, sender)
    GREYLISTED = "greylisted"
    TOO_MANY_RECIPIENTS = "too_many_recipients"  # reconnect and continue
    TEMP_FAILURE = "temp_failure"
    REJECTED = "rejected"  # a permanent refusal that names no cause: neither valid nor invalid
    PROTOCOL_ERROR = "protocol_error"  # syntax / sequence errors, or no usable reply


class ReplyClass(BaseModel):
    """The classification of one reply; ``reason`` is the evidence code it contributes, if any."""

    model_config = ConfigDict(frozen=True)

    kind: ReplyKind
    reason: Reason | None
    permanent: bool
    retry_after: float | None = None
    backoff: bool = False


_REASON: Final[dict[ReplyKind, Reason | None]] = {
    ReplyKind.ACCEPTED: Reason.SMTP_ACCEPTED,
    ReplyKind.OK: None,
    ReplyKind.MAILBOX_NOT_FOUND: Reason.MAILBOX_NOT_FOUND,
    ReplyKind.MAILBOX_FULL: Reason.MAILBOX_FULL,
    ReplyKind.MAILBOX_DISABLED: Reason.MAILBOX_DISABLED,
    ReplyKind.BLOCKED: Reason.BLOCKED_BY_SERVER,
    ReplyKind.GREYLISTED: Reason.GREYLISTED,
    ReplyKind.TOO_MANY_RECIPIENTS: Reason.TEMP_FAILURE,
    ReplyKind.TEMP_FAILURE: Reason.TEMP_FAILURE,
    ReplyKind.REJECTED: None,
    ReplyKind.PROTOCOL_ERROR: Reason.SMTP_PROTOCOL_ERROR,
}

# Kinds that only make sense as an answer about the recipient (RCPT stage).
_MAILBOX_KINDS: Final = frozenset(
    {ReplyKind.MAILBOX_NOT_FOUND, ReplyKind.MAILBOX_FULL, ReplyKind.MAILBOX_DISABLED}
)

# --- enhanced status codes (RFC 3463) ----------------------------------------------------------

_ENHANCED_EXACT = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")

EnhancedCode = tuple[int, int, int]

# Decisive (subject, detail) pairs: when present they settle the kind whatever the text says.
# Keys are (class, subject, detail); class 0 means "either 4 or 5".
_DECISIVE: Final[dict[tuple[int, int, int], ReplyKind]] = {
    (5, 1, 1): ReplyKind.MAILBOX_NOT_FOUND,  # bad destination mailbox address
    (5, 1, 10): ReplyKind.MAILBOX_NOT_FOUND,  # recipient address has null MX / not found (M365)
    (5, 1, 2): ReplyKind.MAILBOX_NOT_FOUND,  # bad destination system address
    (5, 1, 3): ReplyKind.MAILBOX_NOT_FOUND,  # bad destination mailbox address syntax
    (5, 1, 6): ReplyKind.MAILBOX_DISABLED,  # mailbox has moved, no forwarding address
    (0, 1, 7): ReplyKind.BLOCKED,  # bad *sender* mailbox syntax: refuses our probe identity
    (0, 1, 8): ReplyKind.BLOCKED,  # bad *sender* system address
    (0, 2, 2): ReplyKind.MAILBOX_FULL,
    (5, 2, 1): ReplyKind.MAILBOX_DISABLED,
    (0, 5, 3): ReplyKind.TOO_MANY_RECIPIENTS,
    (4, 1, 1): ReplyKind.TEMP_FAILURE,  # "user unknown" but temporary: not evidence of absence
    (4, 3, 2): ReplyKind.TEMP_FAILURE,  # system not accepting messages (postscreen)
    (4, 2, 0): ReplyKind.GREYLISTED,  # postgrey's default prefix
}

# --- text patterns, checked in order within each table -----------------------------------------


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.I)


# Replies whose text is unambiguous even against a generic enhanced code.
_SPECIAL: Final[tuple[tuple[re.Pattern[str], ReplyKind], ...]] = (
    # Microsoft 365 directory-based edge blocking: the recipient is not in the tenant directory.
    (_rx(r"AS\(201806281\)"), ReplyKind.MAILBOX_NOT_FOUND),
    (_rx(r"mailbox name not allowed"), ReplyKind.MAILBOX_NOT_FOUND),
)

_TOO_MANY_RCPT = _rx(r"too many recipients", r"recipient limit", r"too many rcpt")

_BLOCKED = _rx(
    r"spamhaus",
    r"\bblock(?:ed|list(?:ed)?|ing)\b",
    r"black\s?-?list(?:ed)?",
    r"\bdeny\s?list",
    r"\b(?:dns)?rbl\b",
    r"\bdnsbl\b",
    r"\blisted (?:at|in|on|by)\b",
    r"\bpolicy\b",
    r"policies",
    r"\brdns\b",
    r"reverse dns",
    r"\bptr\b",
    r"cannot find your (?:reverse )?hostname",
    r"reputation",
    r"not allowed",
    r"\bnot authori[sz]ed\b",
    r"relay(?:ing)? (?:access )?denied",
    r"unable to relay",
    r"relay not permitted",
    r"access denied",
    r"\bbanned\b",
    r"\bspam\b",
    r"unsolicited",
    r"client host (?:\[[^\]]*\] )?rejected",
    r"sender address rejected",
    r"sender verify failed",
    r"verification failed for",
    r"helo command rejected",
    r"administrative prohibition",
    r"\bprohibited\b",
    r"ipcheck\.proofpoint",
    r"barracuda",
    r"\bdynamic (?:ip|address)",
    r"\bbl\d{2}\b",  # Yahoo [BL21]
)

_THROTTLE = _rx(
    r"too many (?:errors|connections|concurrent|messages|sessions|commands)",
    r"rate.?limit",
    r"unusual rate",
    r"server busy",
    r"\bbusy\b",
    r"temporarily (?:deferred|rate limited)",
    r"try again later, closing connection",
    r"\bTS[S]?\d{2}\b",  # Yahoo [TSS04]
    r"(?:limit|rate) exceeded",
    r"receiving mail (?:at a rate|too quickly)",
    r"throttl",
)

_GREYLIST = _rx(
    r"gr[ea]y-?list",
    r"postgrey",
    r"sqlgrey",
    r"try (?:again )?later",
    r"come back later",
    r"retry (?:later|in|after)",
    r"please try again",
    r"temporarily (?:rejected|deferred)",
)

# Server-side trouble: "try again later" here is not a greylist.
_SERVER_TROUBLE = _rx(
    r"local (?:problem|error)",
    r"temporary (?:server |local |system )?(?:error|problem|failure)",
    r"(?:resources|service) (?:are |is )?(?:temporarily )?unavailable",
    r"insufficient system storage",
)

_FULL = _rx(
    r"mailbox (?:is )?full",
    r"over ?quota",
    r"quota (?:exceeded|exceed|full)",
    r"exceeded (?:its|the|storage|their) (?:storage|quota)",
    r"insufficient (?:user )?storage",
    r"out of storage",
)

_DISABLED = _rx(
    r"(?:account|mailbox|user|address) (?:has been |is |was )?(?:disabled|deactivated|suspended|inactive|locked|closed)",
    r"(?:disabled|deactivated|suspended|inactive|closed) (?:account|mailbox|user)",
    r"no longer (?:active|in use|available)",
    r"\bhas moved\b",
)

_NOT_FOUND = _rx(
    r"user(?:name)? (?:unknown|not found|does not exist|doesn'?t exist|invalid)",
    r"unknown (?:user|recipient|mailbox|address|local.?part)",
    r"no such (?:user|recipient|mailbox|address|account|person)",
    r"(?:mailbox|recipient|address|account|user) (?:does not|doesn'?t|did not) exist",
    r"does not exist",
    r"doesn'?t have an? [\w.\-]+ account",
    r"mailbox (?:unavailable|not found|not available|is unavailable)",
    r"recipient (?:unknown|not found|rejected|invalid)",
    r"recipientnotfound",
    r"invalid (?:recipient|mailbox|address|user)",
    r"(?:not a|no) valid (?:mailbox|recipient|user)",
    r"unrouteable address",
    r"no mailbox",
    r"addressee unknown",
    r"bad (?:recipient|destination mailbox)",
    r"not our customer",
    r"not listed in",  # "not listed in Domino Directory"
    r"\bnosuchuser\b",
)

# A delay the server asks for, after the words that ask for one: "please try again in 300
# seconds", "retry in 5 minutes", "Greylisted for 5 minutes", "wait 1 hour", "come back in
# 00:05:00" (milter-greylist), "try again after 60s". A bare "in 10 minutes" is not enough: rate
# limit texts name windows that way ("100 messages in 10 minutes").
_ASK = (
    r"(?:try(?:\s+(?:again|later))?|retry|come\s+back|resend|send\s+(?:it\s+)?again"
    r"|wait|gr[ea]y-?list(?:ed|ing)?|deferred|delayed|postponed)"
)
_UNIT = r"(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)"
_DELAY = re.compile(
    rf"\b{_ASK}[\s,:]+(?:(?:in|after|for|within)\s+)?(?:at\s+least\s+|about\s+|another\s+)?"
    rf"(?:(\d{{1,6}})\s*{_UNIT}\b|(\d{{1,2}}):(\d{{2}})(?::(\d{{2}}))?(?![\d:]))",
    re.I,
)
_UNIT_SECONDS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(message: str) -> float | None:
    """Seconds a reply asks us to wait ("try again in 15 seconds"), or None when it names none.

    Capped at :data:`MAX_RETRY_AFTER`; ``H:MM:SS`` and ``M:SS`` clocks count too.
    """
    match = _DELAY.search(message[:2000])
    if match is None:
        return None
    number, unit, first, second, third = match.groups()
    if number is not None:
        seconds = int(number) * _UNIT_SECONDS[unit[0].lower()]
    elif third is not None:
        seconds = int(first) * 3600.0 + int(second) * 60.0 + int(third)
    else:
        seconds = int(first) * 60.0 + int(second)
    return min(seconds, MAX_RETRY_AFTER)


def _enhanced(code: int | None, message: str, enhanced_code: str | None) -> EnhancedCode | None:
    if enhanced_code is not None:
        match = _ENHANCED_EXACT.fullmatch(enhanced_code.strip())
        if match is None:
            raise ReplyCodeError(f"not an RFC 3463 enhanced status code: {enhanced_code!r}")
        text: str | None = enhanced_code.strip()
    else:
        text = parse_enhanced_code(message)
    if text is None:
        return None
    cls, subject, detail = (int(part) for part in text.split("."))
    if code is not None and cls != code // 100:
        return None  # RFC 3463 says the classes agree; when they don't, trust the basic code
    return cls, subject, detail


def _decisive(enhanced: EnhancedCode | None) -> ReplyKind | None:
    if enhanced is None:
        return None
    cls, subject, detail = enhanced
    return _DECISIVE.get((cls, subject, detail)) or _DECISIVE.get((0, subject, detail))


def _first(tables: tuple[tuple[re.Pattern[str], ReplyKind], ...], text: str) -> ReplyKind | None:
    for pattern, kind in tables:
        if pattern.search(text):
            return kind
    return None


def _negative_kind(
    stage: SmtpStage, code: int | None, cls: int, enhanced: EnhancedCode | None, text: str
) -> ReplyKind:
    """The kind of a 4xx/5xx reply (``cls`` 4 or 5), before stage and permanence adjustments."""
    subject = enhanced[1] if enhanced else None
    if cls == 5 and subject == 7:
        return ReplyKind.BLOCKED
    if (special := _first(_SPECIAL, text)) is not None:
        return special
    if _TOO_MANY_RCPT.search(text):
        return ReplyKind.TOO_MANY_RECIPIENTS
    if (decisive := _decisive(enhanced)) is not None:
        if decisive is ReplyKind.GREYLISTED and (_BLOCKED.search(text) or _THROTTLE.search(text)):
            return ReplyKind.BLOCKED if _BLOCKED.search(text) else ReplyKind.TEMP_FAILURE
        return decisive
    if _BLOCKED.search(text):
        return ReplyKind.BLOCKED
    if stage == "rcpt" and _FULL.search(text):
        return ReplyKind.MAILBOX_FULL
    if cls == 4:
        if code == 421 or _THROTTLE.search(text):
            return ReplyKind.TEMP_FAILURE
        if _GREYLIST.search(text) and subject not in (3, 4) and not _SERVER_TROUBLE.search(text):
            return ReplyKind.GREYLISTED
        if enhanced is not None and enhanced[1:] == (7, 1):
            return ReplyKind.GREYLISTED
    if stage == "rcpt":
        if _DISABLED.search(text):
            return ReplyKind.MAILBOX_DISABLED
        if _NOT_FOUND.search(text):
            return ReplyKind.MAILBOX_NOT_FOUND if cls == 5 else ReplyKind.TEMP_FAILURE
    if cls == 4:
        return ReplyKind.TEMP_FAILURE
    return _permanent_fallback(stage, code, subject)


def _permanent_fallback(stage: SmtpStage, code: int | None, subject: int | None) -> ReplyKind:
    """A 5xx reply that neither its enhanced code nor its text explains."""
    if subject == 5 or code in (500, 501, 502, 503, 504, 555):
        return ReplyKind.PROTOCOL_ERROR
    if stage != "rcpt":
        # Refusing the banner, EHLO or MAIL FROM is a refusal of us, not of any mailbox.
        return ReplyKind.BLOCKED
    return ReplyKind.REJECTED


def classify(
    stage: SmtpStage, code: int | None, message: str, enhanced_code: str | None = None
) -> ReplyClass:
    """Classify one reply; total for every stage, every code 200-599 or None, and any text."""
    if stage not in _STAGES:
        raise ReplyCodeError(f"unknown SMTP stage: {stage!r}")
    if code is not None and (isinstance(code, bool) or not 200 <= code <= 599):
        raise ReplyCodeError(f"SMTP reply code out of range 200-599: {code!r}")
    enhanced = _enhanced(code, message, enhanced_code)
    cls = code // 100 if code is not None else (enhanced[0] if enhanced else None)
    if cls is None:
        return _result(ReplyKind.PROTOCOL_ERROR, permanent=False)
    if cls in (2, 3):
        return _result(ReplyKind.ACCEPTED if stage == "rcpt" else ReplyKind.OK, permanent=False)
    kind = _negative_kind(stage, code, cls, enhanced, message)
    if kind in _MAILBOX_KINDS and stage != "rcpt":
        kind = ReplyKind.BLOCKED if cls == 5 else ReplyKind.TEMP_FAILURE
    permanent = cls == 5 and kind is not ReplyKind.TOO_MANY_RECIPIENTS
    retry_after = parse_retry_after(message) if cls == 4 else None
    if kind is ReplyKind.GREYLISTED and retry_after is None:
        retry_after = DEFAULT_GREYLIST_RETRY
    backoff = kind is ReplyKind.BLOCKED or (
        kind is ReplyKind.TEMP_FAILURE
        and (code == 421 or bool(_THROTTLE.search(message)) or bool(enhanced and enhanced[1] == 7))
    )
    return _result(kind, permanent=permanent, retry_after=retry_after, backoff=backoff)


def classify_reply(reply: SmtpReply) -> ReplyClass:
    """:func:`classify` for a reply as a session returned it."""
    return classify(reply.stage, reply.code, reply.message, reply.enhanced_code)


def _result(
    kind: ReplyKind, *, permanent: bool, retry_after: float | None = None, backoff: bool = False
) -> ReplyClass:
    return ReplyClass(
        kind=kind,
        reason=_REASON[kind],
        permanent=permanent,
        retry_after=retry_after,
        backoff=backoff,
    )
