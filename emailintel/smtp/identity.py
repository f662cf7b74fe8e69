"""The prober's SMTP identity (HELO name, MAIL FROM) and the refusal to impersonate anyone.

Verifiers that greet as ``gmail.com``, ``localhost`` or the target's own MX get their IP
blocklisted (Reacher #1065); the identity must be the operator's own. Pure apart from reading
the environment in :func:`identity_from_env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from emailintel.errors import ConfigError

__all__ = [
    "HELO_ENV",
    "MAIL_FROM_ENV",
    "Identity",
    "identity_from_env",
    "impersonation_problem",
]

HELO_ENV: Final = "EMAILINTEL_HELO"
MAIL_FROM_ENV: Final = "EMAILINTEL_MAIL_FROM"

# Domains whose use as a HELO name or sender domain by a third party is impersonation.
_BIG_PROVIDERS: Final = frozenset(
    {
        "gmail.com", "googlemail.com", "google.com", "yahoo.com", "ymail.com", "aol.com",
        "outlook.com", "hotmail.com", "live.com", "msn.com", "microsoft.com", "icloud.com",
        "me.com", "mac.com", "apple.com", "protonmail.com", "proton.me", "gmx.com", "gmx.de",
        "gmx.net", "web.de", "mail.ru", "yandex.ru", "yandex.com", "qq.com", "163.com",
        "zoho.com", "fastmail.com",
    }
)  # fmt: skip
_LOCAL_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "localdomain", "local"})
_EXAMPLE: Final = re.compile(
    r"(?:^|\.)example(?:\.[a-z0-9-]+|\.co\.[a-z]{2})?$|(?:^|\.)(?:localhost|localdomain|local|invalid)$"
)
_HOST: Final = re.compile(
    r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"
)
_LITERAL: Final = re.compile(r"\[[0-9a-f:.]+\]")
_LOCAL_PART: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _under(host: str, domains: Iterable[str]) -> str | None:
    for domain in domains:
        d = _norm(domain)
        if d and (host == d or host.endswith("." + d)):
            return d
    return None


def impersonation_problem(host: str, *, targets: Iterable[str] = ()) -> str | None:
    """Why ``host`` (a HELO name or sender domain) impersonates someone, or None if it does not.

    ``targets`` are the domain being probed and its MX host names.
    """
    name = _norm(host)
    if name in _LOCAL_NAMES or _EXAMPLE.search(name):
        return f"{host!r} is a local or example name"
    if (big := _under(name, _BIG_PROVIDERS)) is not None:
        return f"{host!r} belongs to the mail provider {big}"
    if (target := _under(name, targets)) is not None:
        return f"{host!r} is the probed domain or its MX ({target})"
    return None


@dataclass(frozen=True, slots=True)
class Identity:
    """HELO name and envelope sender; ``mail_from == ""`` is the null sender ``<>``."""

    helo: str
    mail_from: str = ""
    force: bool = False

    def __post_init__(self) -> None:
        helo = _norm(self.helo)
        if not (_HOST.fullmatch(helo) or _LITERAL.fullmatch(helo)):
            raise ConfigError(f"HELO must be a fully qualified host name, got {self.helo!r}")
        object.__setattr__(self, "helo", helo)
        if self.mail_from:
            local, sep, domain = self.mail_from.rpartition("@")
            domain = _norm(domain)
            if not sep or not _LOCAL_PART.fullmatch(local) or not _HOST.fullmatch(domain):
                raise ConfigError(f"MAIL FROM must be an ASCII address, got {self.mail_from!r}")
            object.__setattr__(self, "mail_from", f"{local}@{domain}")
        if not self.force:
            self.check()

    @property
    def sender_domain(self) -> str | None:
        """The domain of the envelope sender, or None for the null sender."""
        return self.mail_from.rpartition("@")[2] if self.mail_from else None

    def check(self, *, targets: Iterable[str] = ()) -> None:
        """Raise ConfigError if HELO or sender impersonates a provider, example name or target."""
        if self.force:
            return
        targets = tuple(targets)
        for what, host in (("HELO", self.helo), ("MAIL FROM", self.sender_domain)):
            if host is None or host.startswith("["):
                continue
            if (problem := impersonation_problem(host, targets=targets)) is not None:
                raise ConfigError(f"{what} refused: {problem}; use your own domain or force=True")


def identity_from_env(
    helo: str | None = None,
    mail_from: str | None = None,
    *,
    null_sender: bool = False,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> Identity:
    """An identity from explicit values, else ``$EMAILINTEL_HELO`` / ``$EMAILINTEL_MAIL_FROM``.

    There is no default: probing as nobody-in-particular is what gets verifiers blocklisted.
    """
    source = os.environ if env is None else env
    helo = helo or source.get(HELO_ENV, "").strip()
    if not helo:
        raise ConfigError(f"no HELO name: pass helo= or set {HELO_ENV} to your own FQDN")
    sender = "" if null_sender else (mail_from or source.get(MAIL_FROM_ENV, "").strip())
    if not null_sender and not sender:
        raise ConfigError(
            f"no MAIL FROM: pass mail_from=, set {MAIL_FROM_ENV}, or use the null sender"
        )
    return Identity(helo=helo, mail_from=sender, force=force)
