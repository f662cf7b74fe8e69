"""A fast path for the common plain-ASCII address, giving exactly email-validator's result.

Most real addresses are ``dot-atom@ldh.labels``; for those email-validator's answer is fully
determined (domain lower-cased, RFC 2142 names lower-cased), so we skip its general machinery.
Anything else returns ``None`` and takes the full path. A differential property test keeps the
two in step.
"""

from __future__ import annotations

import re

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_TLD = r"(?:[a-zA-Z0-9][a-zA-Z0-9-]{0,61})?[a-zA-Z]"
_SIMPLE = re.compile(
    rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@((?:{_LABEL}\.)+{_TLD})",
)
_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_MAX_DOMAIN = 253


def parse_simple(text: str, *, allow_test_tld: bool) -> tuple[str, str] | None:
    """``(local_part, domain)`` as email-validator would normalise them, or None if not simple."""
    m = _SIMPLE.fullmatch(text)
    if m is None:
        return None
    local, domain = m.group(1), m.group(2).lower()
    if "--" in domain or len(domain) > _MAX_DOMAIN:
        return None  # Punycode and R-LDH labels, over-long domains: the full path decides.
    for special in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if special == "test" and allow_test_tld:
            continue
        if domain == special or domain.endswith("." + special):
            return None
    if local.lower() in _CASE_INSENSITIVE:
        local = local.lower()
    return local, domain
