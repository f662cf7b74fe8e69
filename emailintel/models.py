"""Frozen result and evidence models shared by every part of emailintel.

The JSON schema of these models is part of the public API: field names are stable, new fields
are only ever added. Every fact is tri-state (``True`` / ``False`` / ``None`` = not known), so
"not checked" can never be mistaken for "passed".
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Verdict(StrEnum):
    """The market-compatible four-way verdict."""

    VALID = "valid"
    RISKY = "risky"
    INVALID = "invalid"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Closed set of machine-readable reason codes, ordered by importance in results."""

    # syntax and lists
    SYNTAX_INVALID = "syntax_invalid"
    TYPO_SUSPECTED = "typo_suspected"
    DISPOSABLE = "disposable"
    ROLE_ACCOUNT = "role_account"
    FREE_PROVIDER = "free_provider"
    GIBBERISH_LOCAL_PART = "gibberish_local_part"
    # DNS
    DOMAIN_NOT_FOUND = "domain_not_found"
    NO_MX = "no_mx"
    NULL_MX = "null_mx"
    MX_UNRESOLVABLE = "mx_unresolvable"
    MX_FALLBACK_A = "mx_fallback_a"
    DNS_TIMEOUT = "dns_timeout"
    DNS_ERROR = "dns_error"
    DNS_NOT_CHECKED = "dns_not_checked"
    MX_PRIVATE_ADDRESS = "mx_private_address"
    # SMTP
    SMTP_ACCEPTED = "smtp_accepted"
    SMTP_NOT_CHECKED = "smtp_not_checked"
    SMTP_INCONCLUSIVE = "smtp_inconclusive"
    MAILBOX_NOT_FOUND = "mailbox_not_found"
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_DISABLED = "mailbox_disabled"
    CATCH_ALL = "catch_all"
    CATCH_ALL_INCONCLUSIVE = "catch_all_inconclusive"
    PROVIDER_ACCEPTS_ALL = "provider_accepts_all"
    GREYLISTED = "greylisted"
    TEMP_FAILURE = "temp_failure"
    BLOCKED_BY_SERVER = "blocked_by_server"
    CONNECT_FAILED = "connect_failed"
    PORT25_BLOCKED = "port25_blocked"
    TIMEOUT = "timeout"
    TLS_ERROR = "tls_error"
    PROXY_ERROR = "proxy_error"
    SMTP_PROTOCOL_ERROR = "smtp_protocol_error"


class MxRecord(BaseModel):
    """One MX host with its preference and the addresses it resolved to (if looked up)."""

    model_config = ConfigDict(frozen=True)

    preference: int
    host: str
    addresses: tuple[str, ...] = ()


DnsStatus = Literal["ok", "nxdomain", "no_mx", "null_mx", "mx_unresolvable", "timeout", "error"]


RecordStatus = Literal["ok", "nxdomain", "nodata", "timeout", "error"]


class RecordFacts(BaseModel):
    """The TXT or CNAME records at one name, bounded (hostile DNS): at most
    ``MAX_RECORDS`` values of at most ``MAX_RECORD_CHARS`` characters; ``truncated`` says so."""

    model_config = ConfigDict(frozen=True)

    name: str
    rdtype: Literal["TXT", "CNAME"]
    status: RecordStatus
    values: tuple[str, ...] = ()
    truncated: bool = False
    error: str | None = None


class DnsFacts(BaseModel):
    """What DNS said about a domain. ``status`` keeps NXDOMAIN, no answer and timeout apart.

    ``mx_unresolvable``: MX hosts exist but none has an address (every A/AAAA answer was NXDOMAIN
    or empty); only reported when the hosts' addresses were looked up.
    """

    model_config = ConfigDict(frozen=True)

    domain: str
    status: DnsStatus
    mx: tuple[MxRecord, ...] = ()
    fallback: Literal["A", "AAAA"] | None = None
    error: str | None = None
    elapsed_ms: float | None = None

    @property
    def accepts_mail(self) -> bool | None:
        """True when some host is supposed to take mail, False when DNS says none, None if unknown."""
        if self.status == "ok":
            return True
        if self.status in ("nxdomain", "no_mx", "null_mx", "mx_unresolvable"):
            return False
        return None


SmtpStage = Literal["connect", "banner", "ehlo", "starttls", "mail", "rcpt", "rset", "quit"]


class SmtpReply(BaseModel):
    """A raw SMTP reply as received, kept for transparency."""

    model_config = ConfigDict(frozen=True)

    stage: SmtpStage
    code: int | None
    enhanced_code: str | None = None
    message: str = ""
    elapsed_ms: float | None = None


class SmtpFacts(BaseModel):
    """What an SMTP probe learned about one mailbox. ``None`` means not learned."""

    model_config = ConfigDict(frozen=True)

    checked: bool = False
    mx_host: str | None = None
    accepted: bool | None = None
    catch_all: bool | None = None
    provider_accepts_all: bool | None = None
    provider: str | None = None
    mailbox_not_found: bool | None = None
    mailbox_full: bool | None = None
    mailbox_disabled: bool | None = None
    greylisted: bool | None = None
    blocked: bool | None = None
    temp_failure: bool | None = None
    connect_failed: bool | None = None
    timed_out: bool | None = None
    tls_error: bool | None = None
    proxy_error: bool | None = None
    protocol_error: bool | None = None
    port25_blocked: bool | None = None
    mx_private_address: bool | None = None
    retry_after: float | None = None
    reply: SmtpReply | None = None
    tls: bool | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


class Evidence(BaseModel):
    """Everything the risk scorer may look at. Every fact defaults to unknown."""

    model_config = ConfigDict(frozen=True)

    syntax_valid: bool | None = None
    disposable: bool | None = None
    role_account: bool | None = None
    free_provider: bool | None = None
    gibberish: bool | None = None
    typo_suggestion: str | None = None
    dns: DnsFacts | None = None
    smtp: SmtpFacts | None = None


class RiskResult(BaseModel):
    """The answer about one address: verdict, score 0-100 (higher = more deliverable), reasons."""

    model_config = ConfigDict(frozen=True)

    address: str
    normalized: str | None = None
    local_part: str | None = None
    domain: str | None = None
    verdict: Verdict
    score: int = Field(ge=0, le=100)
    reasons: tuple[Reason, ...] = ()
    suggestion: str | None = None
    error: str | None = None
    disposable: bool | None = None
    role_account: bool | None = None
    free_provider: bool | None = None
    dns: DnsFacts | None = None
    smtp: SmtpFacts | None = None
