"""What the outbox signs and sends with: the verified domain of a From address, its active DKIM
key (opened from its seal) and the alias, if the address is one."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from server.mail.dns_records import normalise_domain
from server.mail.store import DomainNotVerified, MailStore

__all__ = ["DomainNotVerified", "SendingIdentity", "return_path_of", "sending_identity"]


@dataclass(frozen=True)
class SendingIdentity:
    """The domain (name), DKIM selector and private key PEM, the alias's display name and
    reply-to (None without an alias), and whether the domain tracks opens and clicks."""

    domain: str
    selector: str
    private_key_pem: bytes
    alias_display_name: str | None
    reply_to: str | None
    tracking: bool
    domain_id: str = ""
    return_path: str | None = None
    """The bounce subdomain messages go out with as VERP envelope sender (server.mail.verp),
    once the domain's last check found its return-path record; None: the From address."""


async def sending_identity(
    engine: AsyncEngine, secret: bytes, user_id: str, from_address: str
) -> SendingIdentity:
    """The identity to send ``from_address`` (``local@domain``, or ``Name <local@domain>``) as.

    ``secret`` is the DKIM sealing key (``Services.mail_seal_key``). DomainNotVerified when the
    user has no such domain, it is not verified, or the address is malformed.
    """
    _, address = parseaddr(from_address)
    local, at, domain_text = address.rpartition("@")
    domain = normalise_domain(domain_text) if at and local else None
    if domain is None:
        raise DomainNotVerified(f"not an address: {from_address[:320]!r}")
    store = MailStore(engine, secret)
    record = await store.domain_by_name(user_id, domain)
    if record is None or record.status != "verified":
        raise DomainNotVerified(domain)
    key = record.active_key
    if key is None:
        raise DomainNotVerified(domain)
    pem = await store.private_key(user_id, record.id, key.selector)
    if pem is None:
        raise DomainNotVerified(domain)
    alias = await store.alias_by_local_part(record.id, local.lower())
    return SendingIdentity(
        domain=record.name,
        selector=key.selector,
        private_key_pem=pem,
        alias_display_name=alias.display_name if alias else None,
        reply_to=alias.reply_to if alias else None,
        tracking=record.tracking,
        domain_id=record.id,
        return_path=return_path_of(record.checks),
    )


def return_path_of(checks: list[dict[str, Any]] | None) -> str | None:
    """The return-path record's name when the last check found it ``ok``."""
    for check in checks or []:
        if check.get("purpose") == "return_path" and check.get("status") == "ok":
            name = normalise_domain(str(check.get("name") or ""))
            if name is not None:
                return name
    return None
