"""Typed exceptions raised by emailintel. All derive from :class:`EmailIntelError`."""

from __future__ import annotations


class EmailIntelError(Exception):
    """Base class of every error emailintel raises on purpose."""


class AddressError(EmailIntelError, ValueError):
    """An address that cannot be parsed; ``code`` is a short machine-readable tag."""

    def __init__(self, message: str, *, code: str = "syntax_invalid") -> None:
        super().__init__(message)
        self.code = code


class InjectionError(AddressError):
    """Input that could smuggle SMTP commands (CR, LF, NUL, stray angle brackets, overlong)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="injection")


class SmtpWireError(EmailIntelError):
    """Bytes from an SMTP server that are not SMTP replies, or exceed the reply buffer's limits."""


class PersonNameError(EmailIntelError, ValueError):
    """A person's name that yields no usable tokens."""


class ConfigError(EmailIntelError, ValueError):
    """Invalid configuration (nameservers, weights, thresholds, identities)."""


class DnsError(EmailIntelError):
    """A DNS failure that callers asked to be raised rather than reported as evidence."""


class ProfileUrlError(EmailIntelError, ValueError):
    """A URL that is not a LinkedIn member profile (company page, post, job, other site)."""


class SearchUnavailable(EmailIntelError):
    """A search backend failed (network, server error, malformed answer) after its retries."""


class SearchRateLimited(SearchUnavailable):
    """A search backend kept rate-limiting (202/429/999 or a CAPTCHA page) after its retries."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SearchQueryError(EmailIntelError, ValueError):
    """A LinkedIn search request that cannot be run (empty company, overlong field, bad limit)."""
