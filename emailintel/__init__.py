"""emailintel: async, stateless email intelligence (syntax, lists, patterns, DNS, SMTP, risk)."""

from __future__ import annotations

from emailintel.errors import (
    AddressError,
    ConfigError,
    DnsError,
    EmailIntelError,
    InjectionError,
    PersonNameError,
)
from emailintel.models import (
    DnsFacts,
    Evidence,
    MxRecord,
    Reason,
    RiskResult,
    SmtpFacts,
    SmtpReply,
    Verdict,
)

__version__ = "0.1.0"

__all__ = [
    "AddressError",
    "ConfigError",
    "DnsError",
    "DnsFacts",
    "EmailIntelError",
    "Evidence",
    "InjectionError",
    "MxRecord",
    "PersonNameError",
    "Reason",
    "RiskResult",
    "SmtpFacts",
    "SmtpReply",
    "Verdict",
    "__version__",
]
