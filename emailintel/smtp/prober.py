"""The SMTP prober: configuration, the public probing calls, and sessions shared across domains.

``EHLO -> MAIL FROM -> RCPT real...`` and, only after a real recipient was accepted, a RCPT for a
realistic random address to detect catch-all (cached per domain and MX with a TTL). It reconnects
on ``452 too many recipients``, ``421`` and before Postfix's error limits, moves to the next MX on
connect failure or a 4xx banner, refuses private MX addresses (SSRF) and can route through SOCKS.
One engine (:mod:`emailintel.smtp._engine`) carries every probe: a single domain is a queue of one;
its decisions live in :mod:`emailintel.smtp.plan`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from cachetools import TTLCache

from emailintel.errors import ConfigError
from emailintel.models import DnsFacts, SmtpFacts
from emailintel.smtp import plan
from emailintel.smtp._engine import Engine, targets_of
from emailintel.smtp.greylist import retry_greylisted
from emailintel.smtp.guard import allow_private_from_env
from emailintel.smtp.identity import Identity, identity_from_env
from emailintel.smtp.politeness import Politeness, PolitenessConfig
from emailintel.smtp.providers import ProviderRule, default_providers, match_provider
from emailintel.smtp.proxies import ProxyConfig, open_via_proxy
from emailintel.smtp.session import (
    SmtpSession,
    SmtpTLSError,
    StartTlsMode,
    Timeouts,
)

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "Prober",
    "SharedSessions",
    "facts_from_reply",
    "random_local_part",
]

DEFAULT_RETRY_SCHEDULE: Final = (60.0, 300.0, 900.0)
facts_from_reply = plan.facts_from_reply  # kept importable from here

_FIRST: Final = (
    "jonas", "emma", "liam", "olivia", "noah", "sofia", "lucas", "mia", "elias", "hannah",
    "oscar", "clara", "felix", "nora", "adam", "lena", "david", "julia", "martin", "laura",
    "peter", "anna", "simon", "paula", "daniel", "maria", "thomas", "sarah", "victor", "ella",
)  # fmt: skip
_LAST: Final = (
    "whitfield", "hartley", "brennan", "castillo", "lindqvist", "moreau", "okafor", "petrov",
    "sandoval", "thornton", "vasquez", "weller", "ashby", "barlow", "calloway", "dunmore",
    "ellery", "fairbanks", "galloway", "holloway", "kessler", "langford", "merritt", "norwood",
    "prescott", "radcliffe", "stanton", "tillman", "underwood", "winslow",
)  # fmt: skip


def random_local_part(rng: random.Random | None = None) -> str:
    """A name-like local part nobody is likely to own (``jonas.whitfield7``), never hex noise."""
    rng = rng or random.SystemRandom()
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    sep = rng.choice((".", "", "_"))
    return f"{first}{sep}{last}{rng.randint(2, 98)}"


class Prober:
    """Holds the probing configuration and per-run state (politeness, catch-all cache).

    The identity comes from ``identity`` or ``helo``/``mail_from`` (else ``$EMAILINTEL_HELO`` /
    ``$EMAILINTEL_MAIL_FROM``); private MX addresses are refused unless ``allow_private_mx``
    (else ``$EMAILINTEL_ALLOW_PRIVATE_MX``).
    """

    def __init__(
        self,
        *,
        identity: Identity | None = None,
        helo: str | None = None,
        mail_from: str | None = None,
        null_sender: bool = False,
        force: bool = False,
        timeouts: Timeouts | None = None,
        port: int = 25,
        starttls: StartTlsMode = "opportunistic",
        plain_fallback: bool = True,
        verify_certs: bool = False,
        politeness: Politeness | PolitenessConfig | None = None,
        proxies: ProxyConfig | None = None,
        allow_private_mx: bool | None = None,
        catch_all_ttl: float = 3600.0,
        catch_all_probes: int = 1,
        retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
        max_rejections_per_connection: int = 8,
        max_rcpt_per_connection: int = 50,
        max_reconnects: int = 3,
        address_deadline: float = 120.0,
        providers: Sequence[ProviderRule] | None = None,
        source_address: str | None = None,
        preflight_target: str | None = None,
        preflight_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.identity = identity or identity_from_env(
            helo, mail_from, null_sender=null_sender, force=force, env=env
        )
        self.timeouts = timeouts or Timeouts()
        if isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(f"port out of range: {port!r}")
        if starttls not in ("opportunistic", "required", "never"):
            raise ConfigError(f"starttls must be opportunistic, required or never: {starttls!r}")
        for name, value in (
            ("catch_all_ttl", catch_all_ttl),
            ("address_deadline", address_deadline),
            ("preflight_timeout", preflight_timeout),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        for name, count in (
            ("catch_all_probes", catch_all_probes),
            ("max_rejections_per_connection", max_rejections_per_connection),
            ("max_rcpt_per_connection", max_rcpt_per_connection),
        ):
            if count < 1:
                raise ConfigError(f"{name} must be at least 1, got {count!r}")
        if max_reconnects < 0:
            raise ConfigError(f"max_reconnects must be >= 0, got {max_reconnects!r}")
        if any(not delay > 0 for delay in retry_schedule):
            raise ConfigError(f"retry delays must be positive: {tuple(retry_schedule)!r}")
        self.port = port
        self.starttls: StartTlsMode = starttls
        self.plain_fallback = plain_fallback
        self.verify_certs = verify_certs
        if isinstance(politeness, Politeness):
            self.politeness = politeness
        else:
            self.politeness = Politeness(politeness)
        self.proxies = proxies or ProxyConfig()
        self.allow_private_mx = (
            allow_private_from_env(env) if allow_private_mx is None else allow_private_mx
        )
        self.catch_all_probes = catch_all_probes
        self.retry_schedule = tuple(float(d) for d in retry_schedule)
        self.max_rejections = max_rejections_per_connection
        self.max_rcpt = max_rcpt_per_connection
        self.max_reconnects = max_reconnects
        self.address_deadline = address_deadline
        self.providers = tuple(default_providers() if providers is None else providers)
        if source_address is not None:
            try:
                source_address = str(ipaddress.ip_address(source_address))
            except ValueError:
                raise ConfigError(
                    f"source address must be an IP address: {source_address!r}"
                ) from None
        self.source_address = source_address
        self.preflight_target = preflight_target
        self.preflight_timeout = preflight_timeout
        self._catch_all: TTLCache[tuple[str, str], bool] = TTLCache(
            maxsize=100_000, ttl=catch_all_ttl
        )
        self.sessions_opened = 0

    # --- public ----------------------------------------------------------------------------------

    def provider_of(self, mx_host: str) -> ProviderRule | None:
        """The provider rule matching an MX host name, if any."""
        return match_provider(mx_host, self.providers)

    def cached_catch_all(self, domain: str, mx_host: str) -> bool | None:
        """The cached catch-all verdict of a domain at one MX host (None: not known)."""
        return self._catch_all.get((domain.lower(), mx_host.lower()))

    def remember_catch_all(
        self, domain: str, mx_host: str, verdict: bool, *, only_if_unknown: bool = False
    ) -> None:
        """Cache a catch-all verdict of a domain at one MX host (for the TTL)."""
        key = (domain.lower(), mx_host.lower())
        if not (only_if_unknown and key in self._catch_all):
            self._catch_all[key] = verdict

    def catch_all_addresses(self, domain: str) -> list[str]:
        """Random, name-like addresses at ``domain`` for one catch-all probe."""
        return [f"{random_local_part()}@{domain}" for _ in range(self.catch_all_probes)]

    def limits(self, rule: ProviderRule | None) -> plan.Limits:
        """What one connection to an MX (of provider ``rule``) may spend."""
        max_rcpt = min(self.max_rcpt, rule.max_rcpt_per_session if rule else self.max_rcpt)
        return plan.Limits(
            max_rejections=self.max_rejections,
            max_rcpt=max_rcpt,
            max_reconnects=self.max_reconnects,
        )

    async def probe(
        self,
        domain: str,
        addresses: Iterable[str],
        dns: DnsFacts,
        *,
        stop_on_accept: bool = False,
    ) -> dict[str, SmtpFacts]:
        """Probe ``addresses`` (all at ``domain``) over as few sessions as the servers allow.

        ``dns`` must come from ``lookup_mx(..., resolve_addresses=True)``. Addresses left
        unprobed (``stop_on_accept``) are missing from the answer. Raises ConfigError if the
        identity would impersonate this domain or its MX, and AddressError, before connecting,
        for an address no RCPT command may carry (use parse_address first).
        """
        engine = Engine(self, per_mx=1, total=1)  # a queue of one domain, one connection at a time
        try:
            return await engine.probe(domain, addresses, dns, stop_on_accept=stop_on_accept)
        finally:
            engine.close()

    async def probe_with_retries(
        self, domain: str, addresses: Iterable[str], dns: DnsFacts
    ) -> dict[str, SmtpFacts]:
        """:meth:`probe`, then re-probe greylisted addresses at the server's hint or the schedule."""
        results = await self.probe(domain, addresses, dns)

        async def again(greylisted: list[str]) -> dict[str, SmtpFacts]:
            return await self.probe(domain, greylisted, dns)

        return await retry_greylisted(results, again, self.retry_schedule)

    def share_key(self, dns: DnsFacts) -> tuple[str, str] | None:
        """The (MX host, address) a domain's probe starts at, for sharing sessions (None: none)."""
        if dns.status != "ok" or not dns.mx:
            return None
        targets, _ = targets_of(dns, allow_private=self.allow_private_mx)
        return targets[0].key if targets else None

    async def probe_many(
        self,
        jobs: Iterable[tuple[str, Iterable[str], DnsFacts]],
        *,
        sessions: int = 1,
    ) -> dict[str, dict[str, SmtpFacts]]:
        """Probe several domains, sharing sessions among domains whose first MX is the same.

        Each ``(domain, addresses, dns)`` is answered as :meth:`probe` would; domains on one MX
        address follow each other on a connection (their RCPTs fill each other's batches), with
        at most ``sessions`` connections per MX address. Catch-all verdicts stay per (domain, MX
        host).
        """
        sharing = SharedSessions(self, per_mx=sessions)
        listed = [(domain, list(addresses), dns) for domain, addresses, dns in jobs]
        try:
            found = await asyncio.gather(*(sharing.probe(*job) for job in listed))
        finally:
            sharing.close()
        return {job[0]: facts for job, facts in zip(listed, found, strict=True)}

    def annotate(self, domain: str, results: Mapping[str, SmtpFacts]) -> dict[str, SmtpFacts]:
        """Add catch-all and provider facts to every answer, per the MX host that gave it."""
        out: dict[str, SmtpFacts] = {}
        for address, facts in results.items():
            if facts.mx_host is None:
                out[address] = facts
                continue
            rule = self.provider_of(facts.mx_host)
            update: dict[str, Any] = {"provider": rule.name if rule else None}
            if facts.accepted:
                update["catch_all"] = self.cached_catch_all(domain, facts.mx_host)
                if rule is not None and rule.accepts_all:
                    update["provider_accepts_all"] = True
            out[address] = facts.model_copy(update=update)
        return out

    async def open_session(self, host: str, ip: str, rule: ProviderRule | None) -> SmtpSession:
        """An open session to MX ``host`` at ``ip`` with this prober's settings.

        STARTTLS as configured, falling back to plain text after a TLS failure when allowed;
        through the provider's (or the default) SOCKS proxy if one is set.
        """
        try:
            return await self._open_mode(host, ip, rule, self.starttls)
        except SmtpTLSError:
            if not (self.plain_fallback and self.starttls == "opportunistic"):
                raise
        return await self._open_mode(host, ip, rule, "never")

    async def _open_mode(
        self, host: str, ip: str, rule: ProviderRule | None, mode: StartTlsMode
    ) -> SmtpSession:
        sock = None
        proxy = self.proxies.for_provider(rule.name if rule else None)
        if proxy is not None:
            sock = await open_via_proxy(proxy, ip, self.port, connect_timeout=self.timeouts.connect)
        session = SmtpSession(
            ip,
            port=self.port,
            server_hostname=host,
            helo=self.identity.helo,
            timeouts=self.timeouts,
            starttls=mode,
            verify_certs=self.verify_certs,
            source_address=None if sock is not None else self.source_address,
            sock=sock,
        )
        self.sessions_opened += 1
        await session.open()
        return session

    def preflight_address(self) -> tuple[str, int] | None:
        """The configured pre-flight target as (host, port), or None when none is set."""
        if self.preflight_target is None:
            return None
        host, sep, port = self.preflight_target.rpartition(":")
        if not sep or host.endswith(":") or (host.startswith("[") and not host.endswith("]")):
            return self.preflight_target.strip("[]"), self.port
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"bad pre-flight target {self.preflight_target!r}") from None
        return host.strip("[]"), number


class SharedSessions:
    """Per-domain probes carried over connections shared by all domains on one MX address.

    ``await shared.probe(domain, addresses, dns)`` answers as :meth:`Prober.probe` does; domains
    submitted while others on the same MX address are being probed join their connections and
    fill their batches. At most ``per_mx`` connections per MX address (None: as many as the
    prober's politeness allows per host, opened only while the queue holds more RCPTs than the
    open ones carry and once the MX's round trip is at least ``parallel_from`` seconds) and
    ``total`` in all; :meth:`close` stops the connections.
    """

    def __init__(
        self,
        prober: Prober,
        *,
        per_mx: int | None = None,
        total: int = 256,
        parallel_from: float = plan.PARALLEL_FROM,
    ) -> None:
        if (per_mx is not None and per_mx < 1) or total < 1:
            raise ConfigError(f"session limits must be at least 1, got {per_mx!r}, {total!r}")
        self.prober = prober
        self.per_mx = per_mx
        self._engine = Engine(prober, per_mx=per_mx, total=total, parallel_from=parallel_from)

    async def probe(
        self,
        domain: str,
        addresses: Iterable[str],
        dns: DnsFacts,
        *,
        stop_on_accept: bool = False,
    ) -> dict[str, SmtpFacts]:
        """Probe one domain's addresses, sharing connections with its MX's other domains."""
        return await self._engine.probe(domain, addresses, dns, stop_on_accept=stop_on_accept)

    def close(self) -> None:
        """Cancel the connections (domains still queued are left unanswered)."""
        self._engine.close()
