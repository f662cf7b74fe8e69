"""Parse and normalise one email address: an injection guard in front of email-validator.

Syntax (RFC 5322/6531, IDNA, SMTPUTF8, quoted local parts) is email-validator's; this module adds
the SMTP-injection guard, length limits, typed errors and opt-in mailbox canonicalisation.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict

from emailintel import _fastsyntax
from emailintel._construct import construct
from emailintel.errors import AddressError, InjectionError

MAX_RAW_CHARS = 1000
MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_OCTETS = 64
GOOGLE_CONSUMER_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: anything a mail stack
# or a str.splitlines() could take for a line break.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Lone surrogates are not text (a non-UTF-8 byte under surrogateescape becomes one): no encoder
# can put them on the wire, so they end here as a syntax error instead of a UnicodeEncodeError.
_SURROGATE = re.compile("[\ud800-\udfff]")


class ParsedAddress(BaseModel):
    """A syntactically valid address in its normalised and ASCII (IDNA) forms."""

    model_config = ConfigDict(frozen=True)

    original: str
    normalized: str
    local_part: str
    domain: str
    ascii_domain: str
    ascii_email: str | None
    smtputf8: bool

    @property
    def smtp_address(self) -> str:
        """The form sent in RCPT TO: the ASCII (IDNA) domain, with a UTF-8 local part if any."""
        return self.ascii_email or f"{self.local_part}@{self.ascii_domain}"


def _guard(raw: str) -> str:
    """Reject what could smuggle SMTP commands and return the trimmed address."""
    if len(raw) > MAX_RAW_CHARS:
        raise InjectionError(f"input is too long ({len(raw)} characters, at most {MAX_RAW_CHARS})")
    if (m := _CONTROL.search(raw)) is not None:
        raise InjectionError(f"control character U+{ord(m.group()):04X} in address")
    if (m := _SURROGATE.search(raw)) is not None:
        raise AddressError(
            f"lone surrogate U+{ord(m.group()):04X} in address (not valid Unicode text)",
            code="syntax_invalid",
        )
    text = raw.strip()
    if "<" in text or ">" in text:
        # RFC 5321 allows them in a quoted local part, but no real mailbox has them and a naive
        # server would end the path there: the SMTP session refuses them, so we refuse them here.
        raise InjectionError("angle bracket in address")
    if text.isascii():
        octets = len(text)
    else:
        octets = max(len(text.encode()), len(unicodedata.normalize("NFC", text).encode()))
    if octets > MAX_ADDRESS_OCTETS:
        raise InjectionError(f"address is longer than {MAX_ADDRESS_OCTETS} octets")
    return text


def _check_lengths(local_part: str, normalized: str, ascii_email: str | None) -> None:
    """Enforce RFC 5321 path limits on the forms that will be sent on the wire."""
    if normalized.isascii():
        if len(local_part) > MAX_LOCAL_OCTETS:
            raise InjectionError(f"local part is longer than {MAX_LOCAL_OCTETS} octets")
        longest = max(len(normalized), len(ascii_email or ""))
    else:
        if len(local_part.encode("utf-8")) > MAX_LOCAL_OCTETS:
            raise InjectionError(f"local part is longer than {MAX_LOCAL_OCTETS} octets")
        longest = max(len(normalized.encode("utf-8")), len(ascii_email or ""))
    if longest > MAX_ADDRESS_OCTETS:
        raise InjectionError(f"address is longer than {MAX_ADDRESS_OCTETS} octets")


_ERROR_CODES: tuple[tuple[str, str], ...] = (
    ("internationalized characters before the @-sign are not supported", "smtputf8_not_allowed"),
    ("quoting the part before the @-sign is not allowed", "quoted_local_not_allowed"),
    ("bracketed ip address after the @-sign is not allowed", "domain_literal_not_allowed"),
    ("special-use or reserved name", "special_use_domain"),
    ("must have an @-sign", "missing_at_sign"),
    ("after the @-sign", "domain_invalid"),
    ("top-level domain", "domain_invalid"),
    ("idna", "domain_invalid"),
)


def _error_code(message: str) -> str:
    """Map an email-validator message to a stable, machine-readable code."""
    lowered = message.lower()
    for needle, code in _ERROR_CODES:
        if needle in lowered:
            return code
    return "syntax_invalid"


def _from_simple(raw: str, simple: _fastsyntax.Simple) -> ParsedAddress:
    """A ParsedAddress from a fast-path result (plain values of the declared types: no re-validation)."""
    normalized = f"{simple.local_part}@{simple.domain}"
    return construct(
        ParsedAddress,
        original=raw,
        normalized=normalized,
        local_part=simple.local_part,
        domain=simple.domain,
        ascii_domain=simple.domain,
        ascii_email=normalized if simple.local_part.isascii() else None,
        smtputf8=simple.smtputf8,
    )


def parse_fast(
    raw: str, *, allow_smtputf8: bool = True, allow_test_tld: bool = True
) -> tuple[str, _fastsyntax.Simple | None]:
    """The guarded text and, for a dot-atom address with a plain domain, its normalised parts.

    Raises what :func:`parse_address` raises for non-strings, injection and empty input; ``None``
    means only the full parser can decide. Lets callers skip building a ParsedAddress.
    """
    if not isinstance(raw, str):
        raise AddressError(
            f"address must be a string, not {type(raw).__name__}", code="not_a_string"
        )
    if len(raw) <= MAX_ADDRESS_OCTETS:
        ascii_fast = _fastsyntax.parse_ascii(raw, allow_test_tld=allow_test_tld)
        if ascii_fast is not None and len(ascii_fast.local_part) <= MAX_LOCAL_OCTETS:
            return raw, ascii_fast
    text = _guard(raw)
    if not text:
        raise AddressError("address is empty", code="empty")
    fast = _fastsyntax.parse_simple(
        text, allow_test_tld=allow_test_tld, allow_smtputf8=allow_smtputf8
    )
    if fast is not None:
        _check_lengths(fast.local_part, f"{fast.local_part}@{fast.domain}", None)
    return text, fast


def parse_address(
    raw: str,
    *,
    allow_smtputf8: bool = True,
    allow_quoted_local: bool = True,
    allow_domain_literal: bool = False,
    allow_test_tld: bool = True,
) -> ParsedAddress:
    """Parse ``raw`` into a :class:`ParsedAddress`; raise AddressError or InjectionError.

    ``allow_test_tld`` accepts the reserved ``.test`` TLD (local labs); other special-use names
    (``.invalid``, ``.localhost``, ...) are refused with code ``special_use_domain``.
    """
    text, fast = parse_fast(raw, allow_smtputf8=allow_smtputf8, allow_test_tld=allow_test_tld)
    if fast is not None:
        return _from_simple(raw, fast)
    return parse_guarded(
        raw,
        text,
        allow_smtputf8=allow_smtputf8,
        allow_quoted_local=allow_quoted_local,
        allow_domain_literal=allow_domain_literal,
        allow_test_tld=allow_test_tld,
    )


def parse_guarded(
    raw: str,
    text: str,
    *,
    allow_smtputf8: bool = True,
    allow_quoted_local: bool = True,
    allow_domain_literal: bool = False,
    allow_test_tld: bool = True,
) -> ParsedAddress:
    """The full (email-validator) parse of ``text``, the guarded form :func:`parse_fast` returned."""
    try:
        info = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=allow_smtputf8,
            allow_quoted_local=allow_quoted_local,
            allow_domain_literal=allow_domain_literal,
            allow_display_name=False,
            allow_empty_local=False,
            test_environment=allow_test_tld,
        )
    except EmailNotValidError as exc:
        message = str(exc)
        if "too long" in message:
            raise InjectionError(message) from exc
        raise AddressError(message, code=_error_code(message)) from exc
    local_part = info.local_part or ""
    _check_lengths(local_part, info.normalized, info.ascii_email)
    return ParsedAddress(
        original=raw,
        normalized=info.normalized,
        local_part=local_part,
        domain=info.domain,
        ascii_domain=info.ascii_domain,
        ascii_email=info.ascii_email,
        smtputf8=bool(info.smtputf8),
    )


@lru_cache(maxsize=4096)
def _normalize_cached(raw: str) -> str:
    return parse_address(raw).normalized


def normalize(raw: str) -> str:
    """The normalised form of ``raw`` (NFC local part, lower-case Unicode domain); idempotent."""
    if not isinstance(raw, str):
        return parse_address(raw).normalized  # raises the typed "not_a_string" error
    return _normalize_cached(raw)


def strip_subaddress(parsed: ParsedAddress, *, separator: str = "+") -> str:
    """The normalised address without its ``+tag`` sub-address (opt-in: not every host uses it)."""
    local = parsed.local_part
    if local.startswith('"') or not separator:
        return parsed.normalized
    base = local.split(separator, 1)[0]
    if not base:
        return parsed.normalized
    return f"{base}@{parsed.domain}"


def canonical_mailbox(parsed: ParsedAddress) -> str:
    """The mailbox Google actually delivers to (dots, ``+tag``, googlemail.com folded).

    Only Google consumer domains are folded; every other address is returned normalised as is.
    """
    if parsed.domain not in GOOGLE_CONSUMER_DOMAINS or parsed.local_part.startswith('"'):
        return parsed.normalized
    base = parsed.local_part.split("+", 1)[0].replace(".", "").lower()
    if not base:
        return parsed.normalized
    return f"{base}@gmail.com"
