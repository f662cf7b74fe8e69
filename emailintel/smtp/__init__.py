"""SMTP probing: reply classification, provider rules and one aiosmtplib session."""

from __future__ import annotations

from emailintel.smtp.providers import (
    ProviderDataError,
    ProviderRule,
    default_providers,
    match_provider,
    parse_providers,
)
from emailintel.smtp.replies import (
    DEFAULT_GREYLIST_RETRY,
    ReplyClass,
    ReplyCodeError,
    ReplyKind,
    classify,
    classify_reply,
    parse_enhanced_code,
    parse_retry_after,
)
from emailintel.smtp.session import (
    SmtpConnectError,
    SmtpDisconnectedError,
    SmtpProtocolError,
    SmtpSession,
    SmtpSessionError,
    SmtpTimeoutError,
    SmtpTLSError,
    StartTlsMode,
    Timeouts,
    probe_tls_context,
)

__all__ = [
    "DEFAULT_GREYLIST_RETRY",
    "ProviderDataError",
    "ProviderRule",
    "ReplyClass",
    "ReplyCodeError",
    "ReplyKind",
    "SmtpConnectError",
    "SmtpDisconnectedError",
    "SmtpProtocolError",
    "SmtpSession",
    "SmtpSessionError",
    "SmtpTLSError",
    "SmtpTimeoutError",
    "StartTlsMode",
    "Timeouts",
    "classify",
    "classify_reply",
    "default_providers",
    "match_provider",
    "parse_enhanced_code",
    "parse_providers",
    "parse_retry_after",
    "probe_tls_context",
]
