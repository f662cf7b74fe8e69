"""The inbound mail components of one deployment, built from settings: the store, the raw
message store, and the ports (routing, outbound lookup, suppression) the lead wires to the
domain, outbox and suppression modules. Replace a port with :func:`dataclasses.replace`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from server.mail.inbound_ports import (
    InboundRouting,
    LocalRawStore,
    OutboundLookup,
    RawStore,
    SuppressionSink,
)
from server.mail.inbound_smtp import InboundConfig, InboundHandler
from server.mail.inbound_store import InboundStore, ThreadRefOutboundLookup
from server.mail.inbound_wiring import DomainRouting, SuppressionListSink
from server.settings import Settings
from server.suppression.store import SuppressionStore

__all__ = ["InboundMail", "storage_dir"]


def storage_dir(settings: Settings) -> Path:
    """Where raw inbound messages are kept: ``mail_storage_dir``, else ``bavlio-storage`` beside
    the master secret (beside a SQLite database, or in the working directory)."""
    return settings.mail_storage_dir or settings.master_secret_path().parent / "bavlio-storage"


@dataclass(frozen=True)
class InboundMail:
    """Everything the inbound endpoint and the inbound routes use."""

    store: InboundStore
    raw: RawStore
    routing: InboundRouting
    outbound: OutboundLookup
    suppression: SuppressionSink
    config: InboundConfig

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine) -> InboundMail:
        """Files under the storage directory; recipients routed to verified domains with
        inbound on; hard bounces into the suppression list; outbound messages known through
        the thread references (the services plug campaign stops in: server.campaigns.stops)."""
        return cls(
            store=InboundStore(engine),
            raw=LocalRawStore(storage_dir(settings)),
            routing=DomainRouting(engine),
            outbound=ThreadRefOutboundLookup(engine),
            suppression=SuppressionListSink(SuppressionStore(engine)),
            config=InboundConfig(
                max_bytes=settings.inbound_max_bytes,
                bounce_domains=frozenset(
                    d.lower().rstrip(".") for d in settings.mail_bounce_domains
                ),
                hostname=settings.inbound_hostname,
                return_path_subdomain=settings.mail_return_path_subdomain,
            ),
        )

    def handler(self) -> InboundHandler:
        """The SMTP handler over these components."""
        return InboundHandler(
            store=self.store,
            raw=self.raw,
            routing=self.routing,
            outbound=self.outbound,
            suppression=self.suppression,
            config=self.config,
        )
