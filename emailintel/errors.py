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


class PersonNameError(EmailIntelError, ValueError):
    """A person's name that yields no usable tokens."""


class ConfigError(EmailIntelError, ValueError):
    """Invalid configuration (nameservers, weights, thresholds, identities)."""


class DnsError(EmailIntelError):
    """A DNS failure that callers asked to be raised rather than reported as evidence."""
