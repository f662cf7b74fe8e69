"""Provider rules keyed by MX host suffix, loaded from ``emailintel/data/providers.toml``.

Some providers answer RCPT in ways that say nothing about the mailbox (Microsoft 365 tenants and
Yahoo accept everything and bounce later); the prober looks the MX host up here to know.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emailintel.errors import ConfigError


class ProviderDataError(ConfigError):
    """The provider rules file is malformed (bad TOML, unknown field, duplicate suffix)."""


class ProviderRule(BaseModel):
    """How an SMTP probe should treat one provider's MX hosts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    suffixes: tuple[str, ...] = Field(min_length=1)
    accepts_all: bool = False
    skip_catch_all_probe: bool = False
    reliable: bool = True
    gateway: bool = False
    max_connections: int = Field(default=2, ge=1)
    max_rcpt_per_session: int = Field(default=10, ge=1)
    per_minute: float = Field(default=30.0, gt=0)
    notes: str = ""

    @field_validator("suffixes")
    @classmethod
    def _normalise_suffixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(s.strip().lower().strip(".") for s in value)
        if any(not s or " " in s for s in out):
            raise ValueError("empty or blank MX suffix")
        return out


def _normalise_host(mx_host: str) -> str:
    host = mx_host.strip().lower().rstrip(".")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"not an MX host name: {mx_host!r}")
    return host


def parse_providers(text: str) -> tuple[ProviderRule, ...]:
    """Parse provider rules from TOML text (``[[provider]]`` tables); raises ProviderDataError."""
    try:
        data = tomllib.loads(text)
        rules = tuple(ProviderRule.model_validate(entry) for entry in data.get("provider", []))
    except (tomllib.TOMLDecodeError, ValidationError, TypeError) as exc:
        raise ProviderDataError(f"invalid provider rules: {exc}") from exc
    seen: dict[str, str] = {}
    for rule in rules:
        for suffix in rule.suffixes:
            if suffix in seen:
                raise ProviderDataError(
                    f"suffix {suffix!r} listed by {seen[suffix]} and {rule.name}"
                )
            seen[suffix] = rule.name
    return rules


@cache
def default_providers() -> tuple[ProviderRule, ...]:
    """The rules shipped with the package."""
    text = resources.files("emailintel").joinpath("data/providers.toml").read_text("utf-8")
    return parse_providers(text)


def match_provider(
    mx_host: str, rules: tuple[ProviderRule, ...] | None = None
) -> ProviderRule | None:
    """The rule whose suffix is the longest label-aligned suffix of ``mx_host``, or None."""
    host = _normalise_host(mx_host)
    best: tuple[int, ProviderRule] | None = None
    for rule in default_providers() if rules is None else rules:
        for suffix in rule.suffixes:
            if (host == suffix or host.endswith("." + suffix)) and (
                best is None or len(suffix) > best[0]
            ):
                best = (len(suffix), rule)
    return best[1] if best else None
