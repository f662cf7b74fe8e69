"""The DNS records a sending domain publishes, from the domain and the deployment's mail config.

Pure: no I/O. The model is Postal's and Postmark's: a 2048-bit DKIM key under a per-domain,
rotatable selector; SPF at the apex naming the configured relay; DMARC ``p=none`` with an
aggregate-report address; a return-path (bounce) subdomain that is a CNAME to the deployment's
return-path host when one is configured (its SPF and MX are then ours to keep), else its own MX
and SPF; and an MX for inbound mail when the domain receives.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "DKIM_KEY_BITS",
    "DkimKey",
    "DnsRecord",
    "MailConfig",
    "Purpose",
    "RecordType",
    "dkim_txt",
    "dkim_value",
    "generate_dkim_key",
    "new_selector",
    "normalise_domain",
    "public_key_b64",
    "records_for",
    "spf_mechanisms",
]

DKIM_KEY_BITS = 2048
RecordType = Literal["TXT", "CNAME", "MX"]
Purpose = Literal[
    "dkim", "dkim_pending", "dkim_retiring", "spf", "dmarc", "return_path", "return_path_spf",
    "inbound_mx",
]  # fmt: skip
KeyState = Literal["active", "pending", "retiring"]
_KEY_PURPOSE: dict[KeyState, Purpose] = {
    "active": "dkim",
    "pending": "dkim_pending",
    "retiring": "dkim_retiring",
}

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalise_domain(text: str) -> str | None:
    """``text`` as a lower-case ASCII domain of two or more labels (no trailing dot), or None.

    Deliberately strict (letters, digits, hyphens; an IDN must arrive in its ``xn--`` form): the
    name ends up in DNS records and mail headers.
    """
    name = text.strip().lower().removesuffix(".")
    if not 3 <= len(name) <= 253 or not name.isascii():
        return None
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # an IP address, not a domain
    return name


@dataclass(frozen=True)
class MailConfig:
    """The deployment's mail setup the records point at.

    ``relay_host`` (SPF ``a:``), ``relay_ips`` (``ip4:``/``ip6:``) and ``spf_include``
    (``include:``) name what sends; with none of them SPF says ``mx``. ``return_path_host`` is
    the CNAME target of each domain's bounce subdomain (Postal's ``rp.<host>``); without it the
    subdomain gets its own MX (``inbound_mx_host``, else ``relay_host``) and SPF.
    ``dmarc_rua`` is the aggregate-report address (default ``dmarc-reports@<domain>``).
    """

    relay_host: str | None = None
    relay_ips: tuple[str, ...] = ()
    spf_include: str | None = None
    return_path_host: str | None = None
    return_path_subdomain: str = "bounces"
    dmarc_rua: str | None = None
    inbound_mx_host: str | None = None
    selector_prefix: str = "bavlio"

    def __post_init__(self) -> None:
        """Check every value; the ValueError's message starts with the field's name."""
        for ip in self.relay_ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"relay_ips: invalid IP address {ip!r}") from None
        if not _LABEL.match(self.return_path_subdomain):
            raise ValueError(f"return_path_subdomain: invalid label {self.return_path_subdomain!r}")
        if not _SELECTOR.match(self.selector_prefix) or len(self.selector_prefix) > 40:
            raise ValueError(f"selector_prefix: invalid DKIM selector {self.selector_prefix!r}")
        hosts = {
            "relay_host": self.relay_host,
            "spf_include": self.spf_include,
            "return_path_host": self.return_path_host,
            "inbound_mx_host": self.inbound_mx_host,
        }
        for field_name, host in hosts.items():
            if host is not None and normalise_domain(host) != host.lower():
                raise ValueError(f"{field_name}: invalid host name {host!r}")
        if self.dmarc_rua is not None and not re.fullmatch(
            r"[^@\s,;!]+@[^@\s,;!]+", self.dmarc_rua
        ):
            raise ValueError(f"dmarc_rua: invalid address {self.dmarc_rua!r}")

    @property
    def bounce_mx_host(self) -> str | None:
        """The MX of the bounce subdomain when it is not a CNAME."""
        return self.inbound_mx_host or self.relay_host


@dataclass(frozen=True)
class DkimKey:
    """One DKIM key of a domain: its selector, public key (base64 DER), state and creation time.

    ``active`` signs; ``pending`` (after a rotation) waits until its record is published, then
    becomes active; ``retiring`` (the previous key) stays published until told to retire it.
    """

    selector: str
    public_key: str
    state: KeyState
    created_at: float


@dataclass(frozen=True)
class DnsRecord:
    """One record to publish: type, absolute name, value, MX priority; ``required`` ones decide
    whether the domain is verified."""

    purpose: Purpose
    type: RecordType
    name: str
    value: str
    required: bool
    priority: int | None = None
    selector: str | None = field(default=None)


def new_selector(prefix: str, now: float | None = None) -> str:
    """A dated, unique selector such as ``bavlio-20261207-3f9a``."""
    stamp = time.strftime("%Y%m%d", time.gmtime(time.time() if now is None else now))
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


def generate_dkim_key() -> tuple[bytes, str]:
    """A new RSA 2048 key pair: (private key PEM, public key as base64 DER for ``p=``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_key_b64(pem)


def public_key_b64(private_pem: bytes) -> str:
    """The base64 SubjectPublicKeyInfo of a private key PEM (what DKIM's ``p=`` holds)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def dkim_value(public_key: str) -> str:
    """The DKIM TXT value (one logical string; DNS splits it into 255-byte strings)."""
    return f"v=DKIM1; k=rsa; h=sha256; p={public_key}"


def dkim_txt(domain: str, selector: str) -> str:
    """The name of a DKIM key record."""
    return f"{selector}._domainkey.{domain}"


def spf_mechanisms(config: MailConfig) -> tuple[str, ...]:
    """The SPF mechanisms that authorise the configured relay."""
    terms: list[str] = []
    if config.spf_include:
        terms.append(f"include:{config.spf_include.lower()}")
    if config.relay_host:
        terms.append(f"a:{config.relay_host.lower()}")
    for ip in config.relay_ips:
        address = ipaddress.ip_address(ip)
        terms.append(f"ip{address.version}:{address}")
    return tuple(terms) or ("mx",)


def records_for(
    domain: str, keys: tuple[DkimKey, ...], config: MailConfig, *, inbound: bool
) -> tuple[DnsRecord, ...]:
    """Every record ``domain`` publishes: DKIM (each key), SPF, DMARC, return path, inbound MX."""
    records: list[DnsRecord] = []
    for key in keys:
        purpose = _KEY_PURPOSE[key.state]
        records.append(
            DnsRecord(
                purpose,
                "TXT",
                dkim_txt(domain, key.selector),
                dkim_value(key.public_key),
                required=key.state == "active",
                selector=key.selector,
            )
        )
    spf = " ".join(("v=spf1", *spf_mechanisms(config), "~all"))
    records.append(DnsRecord("spf", "TXT", domain, spf, required=True))
    rua = config.dmarc_rua or f"dmarc-reports@{domain}"
    records.append(
        DnsRecord("dmarc", "TXT", f"_dmarc.{domain}", f"v=DMARC1; p=none; rua=mailto:{rua}", True)
    )
    bounce = f"{config.return_path_subdomain}.{domain}"
    if config.return_path_host:
        records.append(
            DnsRecord("return_path", "CNAME", bounce, config.return_path_host.lower(), False)
        )
    elif config.bounce_mx_host:
        records.append(
            DnsRecord("return_path", "MX", bounce, config.bounce_mx_host.lower(), False, 10)
        )
        records.append(DnsRecord("return_path_spf", "TXT", bounce, spf, False))
    if inbound and config.inbound_mx_host:
        records.append(
            DnsRecord("inbound_mx", "MX", domain, config.inbound_mx_host.lower(), False, 10)
        )
    return tuple(records)
