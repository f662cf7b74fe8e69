"""Suppression values (pure): an address or a domain in the one form entries are stored and
matched in, and the keys an address is looked up by.

An address is trimmed and lower-cased whole (local parts are matched without case: suppressing
too much is the safe error) with its domain in IDNA ASCII form (``bücher.de`` ->
``xn--bcher-kva.de``); plus-tags are kept (``ann+news@`` is its own entry). A domain entry
covers that domain and every subdomain (``acme.com`` covers ``ann@mail.acme.com``) and must have
at least two labels, so a whole top-level domain cannot be suppressed by mistake.
"""

from __future__ import annotations

import re

import idna

__all__ = [
    "MAX_ADDRESS",
    "InvalidValue",
    "lookup_keys",
    "normalise",
    "normalise_domain",
    "normalise_email",
]

MAX_ADDRESS = 320
MAX_DOMAIN = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]]{1,64}$")


class InvalidValue(ValueError):
    """Not an address or domain; ``code`` is ``invalid_email`` or ``invalid_domain``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def normalise_domain(raw: str) -> str:
    """A domain in lower-case IDNA ASCII form, without a trailing dot; InvalidValue otherwise."""
    text = raw.strip().rstrip(".").lower()
    if not text or len(text) > MAX_DOMAIN:
        raise InvalidValue("invalid_domain", "Not a domain.")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            raise InvalidValue("invalid_domain", "Not a valid internationalised domain.") from None
    labels = text.split(".")
    if len(labels) < 2 or len(text) > MAX_DOMAIN or not all(_LABEL.match(x) for x in labels):
        raise InvalidValue("invalid_domain", "Not a domain (two or more labels: acme.com).")
    if labels[-1].isdigit():
        raise InvalidValue("invalid_domain", "Not a domain (an IP address).")
    return text


def normalise_email(raw: str) -> str:
    """An address as entries store it; InvalidValue otherwise."""
    text = raw.strip()
    if len(text) > MAX_ADDRESS or text.count("@") != 1:
        raise InvalidValue("invalid_email", "Not an email address.")
    local, domain = text.split("@")
    if (
        not _LOCAL.match(local)
        or not local.isprintable()
        or "\ufffd" in local  # an undecodable byte in an imported file
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        raise InvalidValue("invalid_email", "Not an email address (its local part).")
    try:
        host = normalise_domain(domain)
    except InvalidValue:
        raise InvalidValue("invalid_email", "Not an email address (its domain).") from None
    return f"{local.lower()}@{host}"


def normalise(raw: str) -> tuple[str, str]:
    """(kind, value): an entry with an ``@`` is an address, otherwise a domain."""
    if "@" in raw:
        return "email", normalise_email(raw)
    return "domain", normalise_domain(raw)


def lookup_keys(address: str) -> tuple[str, ...]:
    """The entry values that suppress ``address``, most specific first: the address, its domain,
    then each parent domain of two or more labels. Empty for a value that is no address."""
    try:
        value = normalise_email(address)
    except InvalidValue:
        return ()
    labels = value.rsplit("@", 1)[1].split(".")
    return (value, *(".".join(labels[i:]) for i in range(len(labels) - 1)))
