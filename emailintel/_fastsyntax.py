"""A fast path for the common address, giving exactly email-validator's result.

Most real addresses are ``local@ldh.labels`` with a plain ASCII domain; for those the domain's
normal form is just lower case, so we skip email-validator's IDNA machinery and check the local
part with its own local-part validator. Anything else returns ``None`` and takes the full path.
A differential property test keeps the two in step.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import NamedTuple

import email_validator
from email_validator import EmailSyntaxError
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT_INTL
from email_validator.syntax import validate_email_local_part

_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_LOCAL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_TLD = r"(?:[a-zA-Z0-9][a-zA-Z0-9-]{0,61})?[a-zA-Z]"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_TLD}")
_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_MAX_DOMAIN = 253
# Read once: email-validator's reserved names (.invalid, .localhost, .test, ...) as suffixes.
_SPECIAL = tuple("." + name for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
_SPECIAL_EXCEPT_TEST = tuple(s for s in _SPECIAL if s != ".test")


class Simple(NamedTuple):
    """A fast-path result: normalised local part and domain, and whether SMTPUTF8 is needed."""

    local_part: str
    domain: str
    smtputf8: bool


def _simple_domain(domain: str, *, allow_test_tld: bool) -> str | None:
    """The lower-cased domain if it is plain ASCII LDH and not reserved, else None."""
    if len(domain) > _MAX_DOMAIN or _DOMAIN.fullmatch(domain) is None:
        return None
    lowered = domain.lower()
    if "--" in lowered:
        return None  # Punycode and R-LDH labels: the full path decides.
    if ("." + lowered).endswith(_SPECIAL_EXCEPT_TEST if allow_test_tld else _SPECIAL):
        return None
    return lowered


def _intl_local(local: str) -> str | None:
    """The NFC local part if email-validator accepts it unquoted as internationalised, else None."""
    if not DOT_ATOM_TEXT_INTL.match(local):
        return None
    try:
        validate_email_local_part(local, allow_smtputf8=True)
        normalized = unicodedata.normalize("NFC", local)
        if normalized != local:
            validate_email_local_part(normalized, allow_smtputf8=True)
    except EmailSyntaxError:
        return None
    return normalized


_ASCII_ADDRESS = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([a-zA-Z0-9.-]+)")


@lru_cache(maxsize=65536)
def _simple_domain_cached(domain: str, allow_test_tld: bool) -> str | None:
    return _simple_domain(domain, allow_test_tld=allow_test_tld)


def parse_ascii(text: str, *, allow_test_tld: bool) -> Simple | None:
    """The all-ASCII dot-atom case in one regex match and a per-domain cache, else None.

    The pattern admits no whitespace, control character or angle bracket, so a match needs no
    injection scan; the caller still enforces the length limits.
    """
    match = _ASCII_ADDRESS.fullmatch(text)
    if match is None:
        return None
    local, domain = match.groups()
    lowered = _simple_domain_cached(domain, allow_test_tld)
    if lowered is None:
        return None
    if local.lower() in _CASE_INSENSITIVE:
        local = local.lower()
    return Simple(local, lowered, False)


def parse_simple(text: str, *, allow_test_tld: bool, allow_smtputf8: bool = True) -> Simple | None:
    """The address as email-validator would normalise it, or None if it is not a simple one."""
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return None
    lowered = _simple_domain(domain, allow_test_tld=allow_test_tld)
    if lowered is None:
        return None
    if local.isascii():
        if _LOCAL.fullmatch(local) is None:
            return None
        if local.lower() in _CASE_INSENSITIVE:
            local = local.lower()
        return Simple(local, lowered, False)
    if not allow_smtputf8:
        return None
    normalized = _intl_local(local)
    if normalized is None:
        return None
    if normalized.isascii() and normalized.lower() in _CASE_INSENSITIVE:
        normalized = normalized.lower()  # NFC can turn e.g. KELVIN SIGN into plain "K"
    return Simple(normalized, lowered, True)


_CONTROL_OR_BRACKET = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff<>]")


def parse_local(local: str, *, max_octets: int) -> tuple[str, int] | None:
    """(normalised local part, octets) if ``local@<simple domain>`` takes the fast path, else None.

    The same decisions as :func:`parse_ascii` then :func:`parse_simple` after the injection guard
    (no control character, surrogate or angle bracket, nothing to trim), split per part so each
    part's verdict can be cached; ``max_octets`` is the local-part limit. ``octets`` is the most
    the guard and the length checks count for this part (raw and NFC UTF-8, and the normalised
    form): an address fits if ``octets + 1 + len(domain)`` is at most 254.
    """
    if local.isascii():
        if _LOCAL.fullmatch(local) is None or len(local) > max_octets:
            return None
        if local.lower() in _CASE_INSENSITIVE:
            local = local.lower()
        return local, len(local)
    if _CONTROL_OR_BRACKET.search(local) is not None or local[0].isspace():
        return None
    normalized = _intl_local(local)
    if normalized is None:
        return None
    if normalized.isascii() and normalized.lower() in _CASE_INSENSITIVE:
        normalized = normalized.lower()
    size = len(normalized.encode())
    if size > max_octets:
        return None
    raw = max(len(local.encode()), len(unicodedata.normalize("NFC", local).encode()))
    return normalized, max(size, raw)


def simple_domain(domain: str, *, allow_test_tld: bool) -> str | None:
    """The lower-cased domain if the fast path takes it (plain ASCII LDH, not reserved)."""
    return _simple_domain(domain, allow_test_tld=allow_test_tld)
