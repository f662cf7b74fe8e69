"""Wiring the outbox's worker and relay from settings, for ``bavlio mail-worker`` and for the
mail worker ``bavlio serve`` embeds on the SQLite default."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from server.background import BackgroundLoop
from server.db.engine import Database
from server.mail.handoff import PostfixLogProbe
from server.mail.outbox import Outbox, RefusalHook
from server.mail.outbox_rules import AmbiguityPolicy
from server.mail.ports import SuppressionCheck, nothing_suppressed
from server.mail.relay import Relay, RelayConfig
from server.mail.worker import MailWorker
from server.settings import Settings

if TYPE_CHECKING:
    from server.services import Services

Companion = Callable[["Services"], BackgroundLoop | None]
"""A loop to run beside the mail worker on its services (None: nothing to run)."""

__all__ = ["Companion", "build_mail_worker", "embedded_mail", "relay_config", "run_mail_worker"]


def relay_config(settings: Settings) -> RelayConfig:
    """The relay settings (ValueError when no relay host is configured)."""
    if not settings.mail_relay_host:
        raise ValueError("BAVLIO_MAIL_RELAY_HOST is not set: there is no relay to send through")
    password = settings.mail_relay_password
    return RelayConfig(
        host=settings.mail_relay_host,
        port=settings.mail_relay_port,
        starttls=settings.mail_relay_starttls,
        username=settings.mail_relay_username,
        password=password.get_secret_value() if password is not None else None,
        cert_bundle=settings.mail_relay_cert_bundle,
    )


def build_mail_worker(
    db: Database,
    settings: Settings,
    suppression: SuppressionCheck = nothing_suppressed,
    on_refused: RefusalHook | None = None,
) -> MailWorker:
    """A mail worker on ``db`` sending through the configured relay; ``on_refused`` hears of a
    recipient the relay refuses for good (the callers pass server.campaigns.stops.on_refused:
    its campaign lead stops)."""
    config = relay_config(settings)
    probe = PostfixLogProbe(settings.mail_relay_log) if settings.mail_relay_log else None
    return MailWorker(
        Outbox(db, on_refused=on_refused),
        lambda: Relay(config),
        suppression=suppression,
        probe=probe,
        policy=AmbiguityPolicy(settings.mail_ambiguity_policy),
        concurrency=settings.mail_worker_concurrency,
        batch=settings.mail_batch,
        lease_seconds=settings.mail_lease_seconds,
        handoff_group=settings.mail_handoff_group,
        rate_per_domain=settings.mail_rate_per_domain,
    )


def embedded_mail(settings: Settings) -> bool:
    """Whether ``bavlio serve`` sends mail itself: the setting, else yes with a relay on SQLite."""
    if settings.embedded_mail_worker is not None:
        return settings.embedded_mail_worker and bool(settings.mail_relay_host)
    return bool(settings.mail_relay_host) and settings.database_url.startswith("sqlite")


async def run_mail_worker(
    settings: Settings, companion: Companion | None = None, on_refused: RefusalHook | None = None
) -> None:
    """``bavlio mail-worker``: migrate, then send until SIGTERM or SIGINT, with ``companion``'s
    loop beside the worker and ``on_refused`` told of relay refusals (the CLI passes the
    campaign sequencer's loop and the campaign stop)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from server.services import Services

    config = relay_config(settings)  # a missing relay fails before the database is touched
    svc = Services.build(settings)
    try:
        await svc.db.migrate()
        worker = build_mail_worker(svc.db, settings, on_refused=on_refused)
        # campaigns' messages join the outbox from here too
        campaigns = None if companion is None else companion(svc)
        loop = asyncio.get_running_loop()
        stop = worker.stop if campaigns is None else _stop_both(worker, campaigns)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        print(
            f"bavlio mail-worker {worker.worker_id}: relay {config.host}:{config.port}"
            + (", campaign sequencer on" if campaigns is not None else ""),
            flush=True,
        )
        if campaigns is None:
            await worker.run()
        else:
            async with campaigns:
                await worker.run()
    finally:
        await svc.close()


def _stop_both(worker: MailWorker, campaigns: BackgroundLoop) -> Callable[[], None]:
    def stop() -> None:
        worker.stop()
        campaigns.stop()

    return stop
