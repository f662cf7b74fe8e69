"""SMTP probing: reply classification, provider rules, sessions and the prober."""

from __future__ import annotations

from emailintel.smtp.guard import classify_address, is_forbidden
from emailintel.smtp.identity import Identity, identity_from_env
from emailintel.smtp.politeness import (
    BucketStore,
    HostSlots,
    MemoryBuckets,
    MemorySlots,
    Politeness,
    PolitenessConfig,
    SlotTable,
    TokenBucket,
)
from emailintel.smtp.preflight import PreflightResult, check_port25
from emailintel.smtp.prober import Prober, random_local_part
from emailintel.smtp.providers import (
    ProviderDataError,
    ProviderRule,
    default_providers,
    match_provider,
    parse_providers,
)
from emailintel.smtp.proxies import ProxyConfig, SmtpProxyError
from emailintel.smtp.redisbuckets import RedisBuckets
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
    encode_path,
    probe_tls_context,
    shared_tls_sessions,
)
from emailintel.smtp.tlssessions import TlsSessionCache

__all__ = [
    "DEFAULT_GREYLIST_RETRY",
    "BucketStore",
    "HostSlots",
    "Identity",
    "MemoryBuckets",
    "MemorySlots",
    "Politeness",
    "PolitenessConfig",
    "PreflightResult",
    "Prober",
    "ProviderDataError",
    "ProviderRule",
    "ProxyConfig",
    "RedisBuckets",
    "ReplyClass",
    "ReplyCodeError",
    "ReplyKind",
    "SlotTable",
    "SmtpConnectError",
    "SmtpDisconnectedError",
    "SmtpProtocolError",
    "SmtpProxyError",
    "SmtpSession",
    "SmtpSessionError",
    "SmtpTLSError",
    "SmtpTimeoutError",
    "StartTlsMode",
    "Timeouts",
    "TlsSessionCache",
    "TokenBucket",
    "check_port25",
    "classify",
    "classify_address",
    "classify_reply",
    "default_providers",
    "encode_path",
    "identity_from_env",
    "is_forbidden",
    "match_provider",
    "parse_enhanced_code",
    "parse_providers",
    "parse_retry_after",
    "probe_tls_context",
    "random_local_part",
    "shared_tls_sessions",
]
