"""Test stand-ins for the sending-domain and suppression modules (injected, never imported):
an RSA key per session, identities for chosen domains, a fixed suppression list, a DKIM DNS
function answering with the test key."""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.db.engine import Database
from server.mail.outbox import Outbox
from server.mail.ports import IdentityLookup, SenderNotAllowed, SuppressionCheck
from server.mail.service import MailService
from server.services import Services

SELECTOR = "bm2026"


@dataclass(frozen=True)
class FakeIdentity:
    """The fields of server.mail.identity.SendingIdentity the outbox reads."""

    domain: str
    selector: str
    private_key_pem: bytes
    alias_display_name: str | None = None
    reply_to: str | None = None
    tracking: bool = False
    return_path: str | None = None


@functools.cache
def signing_key() -> tuple[bytes, str]:
    """(private key PEM, public key base64 for the DKIM record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(public).decode()


def dkim_dns(name: bytes, timeout: int = 5) -> bytes:
    """dkimpy's dnsfunc: the test key's record for ``<SELECTOR>._domainkey.*``."""
    if not name.startswith(f"{SELECTOR}._domainkey.".encode()):
        return b""
    return f"v=DKIM1; k=rsa; p={signing_key()[1]}".encode()


def identities(domains: Collection[str], display_name: str | None = None) -> IdentityLookup:
    """An identity lookup that lets addresses on ``domains`` send (anyone's)."""

    async def lookup(user_id: str, from_address: str) -> FakeIdentity:
        domain = from_address.rpartition("@")[2].lower()
        if domain not in domains:
            raise SenderNotAllowed("domain_not_verified", f"{domain} is not verified.")
        return FakeIdentity(domain, SELECTOR, signing_key()[0], alias_display_name=display_name)

    return lookup


def suppressing(reasons: Mapping[str, str]) -> SuppressionCheck:
    """A suppression check answering from a fixed ``{address: reason}``."""

    async def check(user_id: str, addresses: Sequence[str]) -> Mapping[str, str]:
        return {a: reasons[a] for a in addresses if a in reasons}

    return check


def install(
    services: Services,
    domains: Collection[str] = ("acme.test",),
    suppressed: Mapping[str, str] | None = None,
    **kwargs: object,
) -> MailService:
    """Wire a test MailService into running services (as the lead wires the real modules)."""
    mail = MailService(
        Outbox(services.db),
        identity=identities(domains),
        suppression=suppressing(suppressed or {}),
        **kwargs,  # type: ignore[arg-type]
    )
    services._mail = mail
    return mail


class CountTogether(Outbox):
    """An outbox whose cap counts wait until every racer has counted: the window between a
    sender's count and its insert, forced open for all of them at once (no timing)."""

    def __init__(self, db: Database, racers: int) -> None:
        super().__init__(db)
        self.barrier = asyncio.Barrier(racers)

    async def counts_since(self, domain: str, from_address: str, since: float) -> tuple[int, int]:
        counts = await super().counts_since(domain, from_address, since)
        await self.barrier.wait()
        return counts
