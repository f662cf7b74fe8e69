"""emailintel: async, stateless email intelligence (syntax, lists, patterns, DNS, SMTP, risk).

The public API is re-exported here and loaded lazily, so ``import emailintel`` stays cheap
until a feature is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from emailintel.address import ParsedAddress, normalize, parse_address
    from emailintel.dns import DnsResolver, lookup_mx
    from emailintel.finder import Finder, FindResult, find
    from emailintel.lists import Lists, default_lists
    from emailintel.mxprobe import DomainProbe, probe_domain
    from emailintel.patterns import (
        Candidate,
        PatternDistribution,
        generate_candidates,
        infer_patterns,
    )
    from emailintel.risk import Assessment, RiskPolicy, assess
    from emailintel.smtp.prober import Prober
    from emailintel.typo import suggest, suggest_domain
    from emailintel.verify import (
        Validator,
        validate,
        validate_many,
        validate_offline,
        verify,
        verify_many,
    )

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "ParsedAddress": "emailintel.address",
    "normalize": "emailintel.address",
    "parse_address": "emailintel.address",
    "DnsResolver": "emailintel.dns",
    "lookup_mx": "emailintel.dns",
    "Lists": "emailintel.lists",
    "default_lists": "emailintel.lists",
    "Candidate": "emailintel.patterns",
    "PatternDistribution": "emailintel.patterns",
    "generate_candidates": "emailintel.patterns",
    "infer_patterns": "emailintel.patterns",
    "Assessment": "emailintel.risk",
    "RiskPolicy": "emailintel.risk",
    "assess": "emailintel.risk",
    "suggest": "emailintel.typo",
    "suggest_domain": "emailintel.typo",
    "Validator": "emailintel.verify",
    "validate": "emailintel.verify",
    "validate_many": "emailintel.verify",
    "validate_offline": "emailintel.verify",
    "verify": "emailintel.verify",
    "verify_many": "emailintel.verify",
    "FindResult": "emailintel.finder",
    "Finder": "emailintel.finder",
    "find": "emailintel.finder",
    "Prober": "emailintel.smtp.prober",
    "DomainProbe": "emailintel.mxprobe",
    "probe_domain": "emailintel.mxprobe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emailintel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AddressError",
    "Assessment",
    "Candidate",
    "ConfigError",
    "DnsError",
    "DnsFacts",
    "DnsResolver",
    "DomainProbe",
    "EmailIntelError",
    "Evidence",
    "FindResult",
    "Finder",
    "InjectionError",
    "Lists",
    "MxRecord",
    "ParsedAddress",
    "PatternDistribution",
    "PersonNameError",
    "Prober",
    "Reason",
    "RiskPolicy",
    "RiskResult",
    "SmtpFacts",
    "SmtpReply",
    "Validator",
    "Verdict",
    "__version__",
    "assess",
    "default_lists",
    "find",
    "generate_candidates",
    "infer_patterns",
    "lookup_mx",
    "normalize",
    "parse_address",
    "probe_domain",
    "suggest",
    "suggest_domain",
    "validate",
    "validate_many",
    "validate_offline",
    "verify",
    "verify_many",
]
