"""The long-lived objects handlers share, built once per app and closed at shutdown."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import httpx
from pydantic import SecretStr
from starlette.requests import Request

from emailintel.dns import DnsResolver
from emailintel.models import RiskResult
from server.db.engine import Database
from server.prospects.store import ProspectStore
from server.settings import Settings
from server.ttlcache import SharedTtlCache

if TYPE_CHECKING:
    from emailintel.search.engines import HttpSearchEngine, SearchEngine
    from emailintel.smtp.prober import Prober
    from server.api.health import CheckResult
    from server.auth.principal import Authenticator
    from server.auth.store import AccountStore
    from server.billing.credits import CreditStore
    from server.billing.pricing import Price
    from server.finder.known import KnownAddresses
    from server.finder.verdicts import VerdictCache
    from server.http.idempotency import IdempotencyStore
    from server.jobs.queue import JobQueue
    from server.mail.identity import SendingIdentity
    from server.mail.inbound_service import InboundMail
    from server.mail.service import MailService
    from server.mail.store import MailStore
    from server.ratelimit import KeyRateLimiter
    from server.webhooks.dispatch import Dispatcher
    from server.webhooks.store import WebhookStore

__all__ = [
    "HELO_VARIABLE",
    "SMTP_ROUTES_LEFT_OUT",
    "EmailValidator",
    "KeyedServices",
    "Services",
    "configured_prober",
    "services",
]

HELO_VARIABLE = "EMAILINTEL_HELO"
SMTP_ROUTES_LEFT_OUT = (
    f"{HELO_VARIABLE} is not set, so /api/x402/v1/email/verify and /api/x402/v1/email/find are "
    "not served (set EMAILINTEL_HELO and EMAILINTEL_MAIL_FROM to your own domain to serve them)"
)
"""The start-up warning of ``bavlio serve`` and ``bavlio dev`` without an SMTP identity."""


class EmailValidator(Protocol):
    """What the validate route needs: emailintel's ``Validator`` satisfies it."""

    async def validate(self, address: str) -> RiskResult:
        """Validate one address without SMTP."""
        ...


def default_validator(resolver: DnsResolver) -> EmailValidator:
    """emailintel's validator on ``resolver`` (imported late: only the validate route needs it)."""

    from emailintel.verify import Validator

    validator: EmailValidator = Validator(resolver=resolver)
    return validator


def configured_prober(
    env: Mapping[str, str] | None = None, *, settings: Settings | None = None
) -> Prober | None:
    """emailintel's Prober from ``EMAILINTEL_*``, or None when ``EMAILINTEL_HELO`` is unset.

    Without a HELO name there is no SMTP identity, so the SMTP routes cannot be served; with one,
    the rest of the identity is checked now (ConfigError at start, not at the first request).
    With ``settings``: politeness buckets, per-MX connection slots and back-offs in Redis when
    ``redis_url`` is set (every process on it keeps one MX's rate and cap together), and this
    process's egress (``smtp_source_address`` /
    ``smtp_proxy``).
    """
    source = os.environ if env is None else env
    if not source.get(HELO_VARIABLE, "").strip():
        return None
    from emailintel.smtp.prober import Prober

    if settings is None:
        return Prober(env=source)
    from emailintel.smtp.politeness import Politeness
    from emailintel.smtp.proxies import ProxyConfig
    from emailintel.smtp.redisbuckets import RedisBuckets

    store = slots = None
    if settings.redis_url:
        from server.hostslots import RedisHostSlots

        store = RedisBuckets(settings.redis_url)
        slots = RedisHostSlots(store.client)
    return Prober(
        env=source,
        politeness=Politeness(store=store, slots=slots),
        proxies=ProxyConfig(default=settings.smtp_proxy),
        source_address=settings.smtp_source_address,
    )


@dataclass(frozen=True)
class KeyedServices:
    """What the keyed API needs: accounts and keys, credits, idempotency keys, auth, limits."""

    accounts: AccountStore
    credits: CreditStore
    idempotency: IdempotencyStore
    authenticator: Authenticator
    limiter: KeyRateLimiter
    mail_seal_key: bytes
    webhook_seal_key: bytes
    tracking_key: bytes

    @classmethod
    def build(cls, settings: Settings, db: Database, http: httpx.AsyncClient) -> KeyedServices:
        """Stores on ``db``; secrets from settings or derived from the master secret file."""
        from server.auth.master import derive, load_or_create
        from server.auth.principal import Authenticator
        from server.auth.sessions import SessionVerifier
        from server.auth.store import AccountStore
        from server.billing.credits import CreditStore
        from server.http.idempotency import IdempotencyStore
        from server.ratelimit import KeyRateLimiter

        master: bytes | None = None

        def secret(value: SecretStr | None, purpose: str) -> bytes:
            nonlocal master
            if value is not None:
                return value.get_secret_value().encode()
            if master is None:
                master = load_or_create(settings.master_secret_path())
            return derive(master, purpose)

        from server.mail.sealing import PURPOSE as MAIL_SEAL_PURPOSE

        accounts = AccountStore(db.engine, secret(settings.key_secret, "api-key-hash"))
        mail_seal_key = derive(secret(settings.mail_key_secret, MAIL_SEAL_PURPOSE), "seal")
        credits = CreditStore(db.engine)
        sessions = SessionVerifier(
            secret=secret(settings.jwt_secret, "session-jwt"),
            jwks_url=settings.jwks_url,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            http=http,
        )
        return cls(
            accounts=accounts,
            credits=credits,
            idempotency=IdempotencyStore(db.engine),
            authenticator=Authenticator(
                accounts, credits, sessions, settings.plan_table(), settings.default_plan
            ),
            limiter=KeyRateLimiter(settings.redis_url),
            mail_seal_key=mail_seal_key,
            webhook_seal_key=secret(None, "webhook-secrets"),
            tracking_key=secret(None, "mail-tracking"),
        )


@dataclass
class Services:
    """Settings, database, prospect store, DNS resolver, email validator, HTTP client (RPC),
    and the readiness answers of the RPC and DNS checks (cached for ``ready_cache_seconds``)."""

    settings: Settings
    db: Database
    prospects: ProspectStore
    resolver: DnsResolver
    _validator: EmailValidator | None = None
    _http: httpx.AsyncClient | None = None
    _prober: Prober | None = None
    _search: SearchEngine | None = None
    _owned_search: HttpSearchEngine | None = None
    _keyed: KeyedServices | None = None
    _jobs: JobQueue | None = None
    _mail: MailService | None = None
    _prices: dict[str, Price] | None = None
    _inbound: InboundMail | None = None
    ready_cache: SharedTtlCache[CheckResult] = field(default_factory=SharedTtlCache)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        resolver: DnsResolver | None = None,
        validator: EmailValidator | None = None,
        prober: Prober | None = None,
        search: SearchEngine | None = None,
    ) -> Services:
        """Create every service from settings; nothing connects until first use."""
        db = Database.from_settings(settings)
        return cls(
            settings=settings,
            db=db,
            prospects=ProspectStore(db),
            resolver=resolver or DnsResolver.from_env(),
            _validator=validator,
            _prober=prober,
            _search=search,
        )

    @property
    def prices(self) -> dict[str, Price]:
        """The pricing table with this deployment's overrides (built once: settings are fixed)."""
        if self._prices is None:
            self._prices = self.settings.price_table()
        return self._prices

    @property
    def validator(self) -> EmailValidator:
        """The email validator (emailintel's, on :attr:`resolver`, unless one was given)."""
        if self._validator is None:
            self._validator = default_validator(self.resolver)
        return self._validator

    @property
    def prober(self) -> Prober:
        """The SMTP prober (default: from ``EMAILINTEL_*``; raises ConfigError when unset)."""
        if self._prober is None:
            from emailintel.smtp.prober import Prober

            self._prober = Prober()
        return self._prober

    @property
    def search(self) -> SearchEngine:
        """The LinkedIn search backend (default: ``engine_from_env()``; raises ConfigError)."""
        if self._search is None:
            from emailintel.search.engines import engine_from_env

            self._owned_search = engine_from_env()
            self._search = self._owned_search
        return self._search

    @property
    def jobs(self) -> JobQueue:
        """The job queue, with every kind registered on these services."""
        if self._jobs is None:
            from server.jobs.kinds import register_with
            from server.jobs.queue import JobQueue

            queue = JobQueue(self.db)
            register_with(queue, self)
            self._jobs = queue
        return self._jobs

    @property
    def mail(self) -> MailStore:
        """Sending domains and aliases (DKIM keys sealed with the keyed services' seal key); a
        domain campaigns still send from is not deleted (their in-use check is registered)."""
        from server.campaigns.domain_use import campaign_reasons
        from server.mail.store import MailStore, register_in_use_check

        register_in_use_check(campaign_reasons)  # once: registering again changes nothing
        return MailStore(
            self.db.engine, self.keyed.mail_seal_key, self.settings.mail_selector_prefix
        )

    @property
    def inbound(self) -> InboundMail:
        """BaviMail inbound: stores and ports, replies and hard bounces stopping campaign leads
        (replace ``_inbound`` to wire other ports)."""
        if self._inbound is None:
            from server.campaigns.stops import with_campaign_stops
            from server.mail.inbound_service import InboundMail

            self._inbound = with_campaign_stops(InboundMail.build(self.settings, self.db.engine))
        return self._inbound

    @property
    def webhooks(self) -> WebhookStore:
        """Customer webhook endpoints and deliveries (secrets sealed with a derived key)."""
        from server.webhooks.store import WebhookStore

        return WebhookStore(self.db.engine, lambda: self.keyed.webhook_seal_key)

    def webhook_dispatcher(self) -> Dispatcher:
        """A dispatcher delivering this deployment's webhooks (settings decide what it may
        reach)."""
        from server.webhooks.dispatch import Dispatcher

        return Dispatcher(
            self.webhooks,
            allow_private=self.settings.webhooks_allow_private,
            allow_http=self.settings.webhooks_allow_http,
        )

    @property
    def sending(self) -> MailService:
        """BaviMail's sending service (identity and suppression as wired; see server.mail.ports)."""
        if self._mail is None:
            from server.mail.outbox import Outbox
            from server.mail.outbox_rules import DailyCaps
            from server.mail.service import MailService, Tracking

            caps = DailyCaps(
                self.settings.mail_daily_cap_domain, self.settings.mail_daily_cap_alias
            )
            tracking = None
            if self.settings.public_url:
                tracking = Tracking(self.settings.public_url, self.keyed.tracking_key)
            self._mail = MailService(
                Outbox(self.db),
                caps=caps,
                tracking=tracking,
                identity=self._sending_identity,
                suppression=self._suppressed,
            )
        return self._mail

    async def _sending_identity(self, user_id: str, from_address: str) -> SendingIdentity:
        """The From address's verified domain and DKIM key (SenderNotAllowed otherwise)."""
        from server.mail.identity import DomainNotVerified, sending_identity
        from server.mail.ports import SenderNotAllowed

        try:
            return await sending_identity(
                self.db.engine, self.keyed.mail_seal_key, user_id, from_address
            )
        except DomainNotVerified:
            raise SenderNotAllowed(
                "domain_not_verified", "The From address is not on a verified sending domain."
            ) from None

    async def _suppressed(self, user_id: str, addresses: Sequence[str]) -> dict[str, str]:
        """Each suppressed address and why (one query for the batch)."""
        from server.suppression.store import SuppressionStore

        found = await SuppressionStore(self.db.engine).is_suppressed(user_id, addresses)
        return {
            address: f"suppressed: {entry.kind} {entry.value} ({entry.source})"
            for address, entry in found.items()
            if entry is not None
        }

    @property
    def verdicts(self) -> VerdictCache:
        """Cached SMTP verdicts (answered again free within the cache window)."""
        from server.finder.verdicts import VerdictCache

        return VerdictCache(self.db.engine, self.settings.verify_cache_seconds)

    @property
    def known(self) -> KnownAddresses:
        """Confirmed addresses and the per-domain patterns learned from them."""
        from server.finder.known import KnownAddresses

        return KnownAddresses(self.db.engine)

    @property
    def keyed(self) -> KeyedServices:
        """The keyed API's stores and guards (built on first use: reads the master secret)."""
        if self._keyed is None:
            self._keyed = KeyedServices.build(self.settings, self.db, self.http)
        return self._keyed

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client for chain RPC (created on first use: building TLS contexts is slow)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.ready_timeout)
        return self._http

    async def close(self) -> None:
        """Release connections (database pool, HTTP clients, the prober's shared politeness
        store: the services own the prober they were built with)."""
        if self._prober is not None:
            store = self._prober.politeness.store
            closing = getattr(store, "aclose", None)
            if closing is not None:
                await closing()
        if self._owned_search is not None:
            await self._owned_search.aclose()
        if self._http is not None:
            await self._http.aclose()
        await self.db.dispose()


def services(request: Request) -> Services:
    """The services of the app serving ``request``."""
    value: Services = request.app.state.services
    return value
