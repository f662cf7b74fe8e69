"""Server settings: read from ``BAVLIO_*`` variables, a ``.env`` file or a TOML file, validated once.

Precedence (highest first): explicit keyword arguments, environment, ``.env``, TOML
(``BAVLIO_CONFIG=path.toml`` or ``--config``), defaults. TOML keys are the field names without the
prefix (``port = 8080``).

The emailintel library reads its own variables; they pass through untouched:

- ``EMAILINTEL_NAMESERVERS``: comma-separated DNS servers for MX lookups (default: the system's).
- ``EMAILINTEL_HELO``: the name sent in EHLO by SMTP probes.
- ``EMAILINTEL_MAIL_FROM``: the envelope sender used by SMTP probes.
- ``EMAILINTEL_ALLOW_PRIVATE_MX``: ``1`` to allow probing MX hosts on private addresses (labs only).
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from server.auth.plans import DEFAULT_PLANS, Plan
from server.billing.pricing import Price, PriceOverride, price_table

if TYPE_CHECKING:
    from server.mail.dns_records import MailConfig

__all__ = [
    "ENV_PREFIX",
    "PRICE_KEYS",
    "PUBLIC_URL_MAX",
    "Settings",
    "SettingsError",
    "load_settings",
]

ENV_PREFIX = "BAVLIO_"
CONFIG_VARIABLE = "BAVLIO_CONFIG"

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_PRIVATE_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
# The public URL: printable ASCII without space, '<' or '>', short enough that the URL plus a
# token (at most 200 characters) fits one List-Unsubscribe header line.
PUBLIC_URL_MAX = 512
_PUBLIC_URL = re.compile(rf"[!-;=?-~]{{1,{PUBLIC_URL_MAX}}}")
# CAIP-2: namespace ":" reference (https://chainagnostic.org/CAIPs/caip-2).
_CAIP2 = re.compile(r"^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$")
_SUPPORTED_DB = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}

_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_path", default=None)


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError("must be a 0x-prefixed 20-byte hex address")
    return value


Address = Annotated[str, AfterValidator(_address)]

PRICE_KEYS: dict[str, str] = {
    "/email/validate": "email.validate",
    "/email/verify": "email.verify",
    "/email/find": "email.find",
    "/linkedin/find-url": "linkedin.find_url",
    "/prospects/search": "prospects.search",
}
"""Paid route path (under ``/api/x402/v1``) -> its key in the pricing table."""


class SettingsError(ValueError):
    """A setting with a bad value; ``variable`` names the environment variable to fix."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"invalid setting {variable}: {message}")
        self.variable = variable


class Settings(BaseSettings):
    """Everything the server needs to start; every value is checked before anything runs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = "sqlite+aiosqlite:///./bavlio.sqlite3"
    database_schema: str | None = None
    database_hot_connections: int = Field(default=4, ge=0, le=64)
    """PostgreSQL: asyncpg connections of each process's own for the key lookup and the debit
    of every keyed request (0: they use the main pool; server.db.hotpg)."""
    redis_url: str | None = None
    rpc_url: str | None = None
    network: str = "eip155:8453"
    asset: Address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    asset_name: str = "USD Coin"
    asset_version: str = "2"
    asset_decimals: int = Field(default=6, ge=0, le=36)
    pay_to: Address | None = None
    settler_key: SecretStr | None = None
    facilitator_url: str | None = None
    facilitator_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    ready_dns_probe: str = "example.com"
    ready_timeout: float = Field(default=3.0, gt=0, le=60)
    ready_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    """How long readiness reuses its chain RPC and DNS answers (0: ask on every request)."""
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    """Overrides of the pricing table (server.billing.pricing), e.g. ``BAVLIO_PRICES=
    '{"email.verify": {"usd": "0.006", "credits": 2}}'``."""
    plans: dict[str, Plan] = Field(default_factory=dict)
    """Plans added to or replacing the defaults (server.auth.plans), as JSON."""
    default_plan: str = "free"
    """The plan of a user first seen through a session token."""
    secret_file: Path | None = None
    """The master secret's file (default: ``bavlio.secret`` beside a SQLite database)."""
    key_secret: SecretStr | None = None
    """HMAC key of stored API key hashes (default: derived from the master secret)."""
    jwt_secret: SecretStr | None = None
    """HS256 secret of session tokens (default: derived from the master secret)."""
    jwks_url: str | None = None
    """JWKS URL whose RS256/ES256 keys sign session tokens (an external identity provider)."""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    """Jobs one ``bavlio worker`` process runs at once."""
    job_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How long a claimed job stays leased without a heartbeat (a dead worker's jobs wait this
    long before another worker resumes them)."""
    job_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    """How often an idle worker looks for new jobs."""
    verify_cache_seconds: float = Field(default=86_400.0, ge=0, le=30 * 86_400)
    """How long an SMTP verdict is answered again free (0: never)."""
    embedded_worker: bool | None = None
    """Run jobs inside ``bavlio serve`` (default: yes on SQLite, no on PostgreSQL, where
    ``bavlio worker`` processes run them)."""
    job_handlers: str = "server.jobs.kinds:register"
    """Comma-separated ``module:function`` that register the job kinds a worker runs."""
    smtp_source_address: str | None = None
    """Local address this process's SMTP probes leave from (pins a worker to one egress IP)."""
    smtp_proxy: str | None = None
    """``socks5://host:port`` (or socks4) every SMTP probe of this process goes through."""
    storage_dir: Path | None = None
    """Where uploaded and exported files are kept (default: ``bavlio-files`` beside a SQLite
    database, or ``./bavlio-files``); unused when ``s3_bucket`` is set."""
    s3_bucket: str | None = None
    """Keep files in this S3-compatible bucket instead (needs the access key and secret)."""
    s3_endpoint: str | None = None
    """The S3 endpoint URL (MinIO, SeaweedFS, Garage, R2...; default: AWS for the region)."""
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    """A folder inside the bucket every key goes under."""
    upload_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=2 * 1024**3)
    """The largest file an upload route accepts."""

    inbound_enabled: bool = False
    """Run the inbound SMTP endpoint inside ``bavlio serve`` (BaviMail inbound mail)."""
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(default=2525, ge=1, le=65535)
    inbound_max_bytes: int = Field(default=10_240_000, ge=1024, le=200 * 1024 * 1024)
    """Largest message the endpoint accepts (552 above; Postfix's default limit)."""
    inbound_hostname: str = "bavlio-inbound"
    mail_storage_dir: Path | None = None
    """Raw inbound messages (default: ``bavlio-storage`` beside the master secret)."""
    mail_bounce_domains: list[str] = Field(default_factory=list)
    """Return-path domains whose ``bounces[+tag]@`` address receives DSNs."""
    mail_relay_host: str | None = None
    """The SMTP relay BaviMail hands outgoing mail to (a local Postfix); unset: no sending."""
    mail_relay_port: int = Field(default=25, ge=1, le=65535)
    mail_relay_starttls: bool | None = None
    """STARTTLS to the relay: true required, false never, unset when offered."""
    mail_relay_username: str | None = None
    mail_relay_password: SecretStr | None = None
    mail_relay_cert_bundle: str | None = None
    """CA file that verifies the relay's certificate (default: the system's)."""
    mail_relay_log: Path | None = None
    """The relay's Postfix ``maillog_file``: outbox recovery reads it to learn whether a message
    a dead worker was handing off was queued (exactly once instead of the policy below)."""
    mail_ambiguity_policy: Literal["fail", "resend"] = "fail"
    """A message whose hand-off nobody can confirm: ``fail`` (at most once) or ``resend``."""
    mail_worker_concurrency: int = Field(default=2, ge=1, le=64)
    """SMTP connections (each with its own batch) one mail worker keeps to the relay."""
    mail_batch: int = Field(default=100, ge=1, le=10_000)
    mail_handoff_group: int = Field(default=1, ge=1, le=100)
    """Messages handed to the relay per commit (1: the narrowest ambiguity window)."""
    mail_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    mail_rate_per_domain: float = Field(default=0.0, ge=0)
    """Messages a second per sending domain and worker (0: no limit)."""
    mail_daily_cap_domain: int = Field(default=0, ge=0)
    """Messages a UTC day per sending domain (0: no cap)."""
    mail_daily_cap_alias: int = Field(default=0, ge=0)
    """Messages a UTC day per sending address (0: no cap)."""
    campaign_sequencer: bool = True
    """Run the campaign sequencer beside the mail worker (it needs an https ``public_url``
    for the unsubscribe links every campaign message carries)."""
    campaign_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    """Seconds between two campaign sequencer ticks."""
    campaign_hold_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    """A campaign is held while its hard bounces exceed this share of its sends..."""
    campaign_hold_min_sends: int = Field(default=50, ge=1, le=1_000_000)
    """...once it has sent at least this many (fewer: too few to judge)."""
    embedded_mail_worker: bool | None = None
    """Send mail inside ``bavlio serve`` (default: when a relay is set, on SQLite)."""
    rate_limit_ip: str = "300/minute"
    rate_limit_payer: str = "120/minute"
    public_url: str | None = None
    """This deployment's public https address: tracked links and the open pixel point here
    (unset: no tracking, whatever a domain asks)."""
    mail_public_relay_host: str | None = None
    """The public host name our relay sends from, as customers' SPF records name it (``a:``);
    ``mail_relay_host`` is where the outbox hands mail over (often a local Postfix)."""
    mail_relay_ips: list[str] = Field(default_factory=list, max_length=10)
    """The relay's public addresses (SPF ``ip4:``/``ip6:``), as JSON."""
    mail_spf_include: str | None = None
    """A domain whose SPF record customers include (``include:``)."""
    mail_return_path_host: str | None = None
    """CNAME target of each domain's bounce subdomain (Postal's ``rp.<host>``); unset: the
    subdomain gets its own MX (``mail_inbound_mx_host``, else ``mail_public_relay_host``) and SPF."""
    mail_return_path_subdomain: str = "bounces"
    mail_dmarc_rua: str | None = None
    """DMARC aggregate-report address (default ``dmarc-reports@<domain>``)."""
    mail_inbound_mx_host: str | None = None
    """The MX host of domains that receive mail."""
    mail_selector_prefix: str = "bavlio"
    mail_key_secret: SecretStr | None = None
    """Seals DKIM private keys at rest (default: derived from the master secret)."""
    webhooks_dispatch: bool = True
    """Deliver customer webhooks from this process (every process may: deliveries are leased)."""
    webhooks_allow_private: bool = False
    """Let webhooks go to private and loopback addresses (labs and tests only)."""
    webhooks_allow_http: bool = False
    """Accept ``http://`` webhook URLs (labs and tests only; production receivers use https)."""

    @field_validator("rate_limit_ip", "rate_limit_payer")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from server.ratelimit import parse_limit

        parse_limit(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in _SUPPORTED_DB:
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return f"{_SUPPORTED_DB[scheme]}://{rest}"

    @field_validator("database_schema")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z_][a-z0-9_]{0,62}$", value):
            raise ValueError("must be a lower-case SQL identifier")
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, PriceOverride]) -> dict[str, PriceOverride]:
        price_table(value)
        return value

    @model_validator(mode="after")
    def _s3_complete(self) -> Settings:
        if self.s3_bucket and not (self.s3_access_key_id and self.s3_secret_access_key):
            raise ValueError("s3_bucket requires s3_access_key_id and s3_secret_access_key")
        if self.s3_endpoint and not re.match(r"^https?://[^\s/]+(/[^\s]*)?$", self.s3_endpoint):
            raise ValueError("s3_endpoint must be an http(s) URL")
        return self

    @model_validator(mode="after")
    def _known_default_plan(self) -> Settings:
        if self.default_plan not in self.plan_table():
            raise ValueError(f"default_plan {self.default_plan!r} is not a known plan")
        return self

    @model_validator(mode="after")
    def _mail(self) -> Settings:
        try:
            self.mail_config()
        except ValueError as exc:  # "<MailConfig field>: why" -> the setting's name
            name, _, why = str(exc).partition(":")
            setting = "mail_public_relay_host" if name == "relay_host" else f"mail_{name}"
            raise ValueError(f"{setting}:{why}") from None
        return self

    def mail_config(self) -> MailConfig:
        """The records' view of the mail settings (ValueError names a bad one)."""
        from server.mail.dns_records import MailConfig

        return MailConfig(
            relay_host=self.mail_public_relay_host,
            relay_ips=tuple(self.mail_relay_ips),
            spf_include=self.mail_spf_include,
            return_path_host=self.mail_return_path_host,
            return_path_subdomain=self.mail_return_path_subdomain,
            dmarc_rua=self.mail_dmarc_rua,
            inbound_mx_host=self.mail_inbound_mx_host,
            selector_prefix=self.mail_selector_prefix,
        )

    @field_validator("key_secret", "jwt_secret", "mail_key_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("rpc_url", "facilitator_url", "jwks_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        # Tracking and unsubscribe URLs (base + a token of up to 200 characters) go into
        # List-Unsubscribe as one unbreakable word: it must stay printable ASCII within one
        # 998-octet header line (see server.mail.header_fold).
        if value is not None and not _PUBLIC_URL.fullmatch(value):
            raise ValueError(
                f"must be at most {PUBLIC_URL_MAX} printable ASCII characters, "
                "without spaces, '<' or '>'"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^rediss?://", value):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("smtp_source_address")
    @classmethod
    def _smtp_source_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return str(ipaddress.ip_address(value.strip()))
            except ValueError:
                raise ValueError("must be an IP address such as 192.0.2.10") from None
        return value

    @field_validator("smtp_proxy")
    @classmethod
    def _smtp_proxy(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^socks(4a?|5h?)://[^\s/:]+(:\d{1,5})?/?$", value):
            raise ValueError("must be a socks5:// or socks4:// URL with a host")
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not _CAIP2.match(value):
            raise ValueError("must be a CAIP-2 chain id such as eip155:8453")
        return value

    @field_validator("settler_key")
    @classmethod
    def _settler_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _PRIVATE_KEY.match(value.get_secret_value()):
            raise ValueError("must be a 32-byte hex private key")
        return value

    @model_validator(mode="after")
    def _schema_needs_postgres(self) -> Settings:
        if self.database_schema is not None and not self.database_url.startswith("postgresql"):
            raise ValueError("database_schema requires a postgresql database_url")
        return self

    @model_validator(mode="after")
    def _one_settler(self) -> Settings:
        if self.settler_key is not None and self.facilitator_url is not None:
            raise ValueError("set settler_key or facilitator_url, not both")
        return self

    @property
    def chain_id(self) -> int | None:
        """The EVM chain id of ``network`` (``eip155:<id>``), or None for other namespaces."""
        namespace, _, reference = self.network.partition(":")
        return int(reference) if namespace == "eip155" and reference.isdigit() else None

    def price_table(self) -> dict[str, Price]:
        """The pricing table with this deployment's overrides."""
        return price_table(self.prices)

    def price(self, path: str) -> Decimal:
        """The USD price of a paid route given its path under ``/api/x402/v1``."""
        return self.price_table()[PRICE_KEYS[path]].usd

    def plan_table(self) -> dict[str, Plan]:
        """Every plan: the defaults, then this deployment's."""
        return {**DEFAULT_PLANS, **self.plans}

    def master_secret_path(self) -> Path:
        """Where the master secret lives (beside the SQLite file, or ``./bavlio.secret``)."""
        if self.secret_file is not None:
            return self.secret_file
        scheme, _, rest = self.database_url.partition(":///")
        if scheme.startswith("sqlite") and rest and not rest.startswith(":memory:"):
            return Path(rest.split("?")[0]).with_suffix(".secret")
        return Path("bavlio.secret")

    def storage_path(self) -> Path:
        """The local storage directory (``storage_dir``, else ``bavlio-files`` beside the SQLite
        file, else ``./bavlio-files``)."""
        if self.storage_dir is not None:
            return self.storage_dir
        scheme, _, rest = self.database_url.partition(":///")
        if scheme.startswith("sqlite") and rest and not rest.startswith(":memory:"):
            return Path(rest.split("?")[0]).parent / "bavlio-files"
        return Path("bavlio-files")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Insert the TOML file (if any) below the environment and ``.env``."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return (*sources, file_secret_settings)


def _variable(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + str(loc[0]).upper()


def _one_line(exc: ValidationError) -> SettingsError:
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a cross-field rule: name every field its message mentions
        named = [name for name in Settings.model_fields if re.search(rf"\b{name}\b", message)]
        return SettingsError("/".join(_variable((name,)) for name in named) or "BAVLIO_*", message)
    return SettingsError(_variable(tuple(error["loc"])), message)


def load_settings(
    config: str | Path | None = None, *, env_file: str | Path | None = ".env", **overrides: Any
) -> Settings:
    """Build validated settings, raising :class:`SettingsError` with a one-line message."""
    for name in os.environ:
        if name.startswith(ENV_PREFIX + "PRICE_"):  # the per-route fields before the price table
            raise SettingsError(
                name, 'replaced by BAVLIO_PRICES, e.g. {"email.validate": {"usd": "0.003"}}'
            )
    path = config if config is not None else os.environ.get(CONFIG_VARIABLE)
    toml = Path(path) if path else None
    if toml is not None and not toml.is_file():
        raise SettingsError(CONFIG_VARIABLE, f"config file {str(toml)!r} does not exist")
    token = _toml_path.set(toml)
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise _one_line(exc) from None
    except ValueError as exc:  # a TOML file that does not parse
        raise SettingsError(CONFIG_VARIABLE, str(exc).splitlines()[0]) from None
    finally:
        _toml_path.reset(token)
