"""The app's lifespan runs the inbound endpoint when ``inbound_enabled`` (off by default) and
stops it with the app; the default routing accepts no domain until the domain module is wired."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest
from inbound_helpers import free_port
from keyed_helpers import keyed_app, keyed_settings

from server.mail.inbound_ports import StaticRouting
from server.mail.inbound_service import storage_dir
from server.settings import Settings, load_settings


async def test_serve_starts_and_stops_the_endpoint(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = keyed_settings(settings, tmp_path, inbound_enabled=True, inbound_port=port)
    async with keyed_app(config) as keyed:
        assert storage_dir(config) == tmp_path / "bavlio-storage"
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
        await client.connect()
        await client.ehlo()
        assert client.supports_extension("size")
        await client.mail("bob@client.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("ann@acme.test")
        assert refused.value.code == 550
        await client.quit()
        assert isinstance(keyed.services.inbound.routing, StaticRouting)
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5).connect()


async def test_the_endpoint_is_off_by_default(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    async with keyed_app(keyed_settings(settings, tmp_path, inbound_port=port)):
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5).connect()


def test_inbound_settings_are_validated() -> None:
    from server.settings import SettingsError

    for bad in ({"inbound_port": 0}, {"inbound_max_bytes": 10}):
        with pytest.raises((SettingsError, ValueError)):
            load_settings(env_file=None, **bad)
    explicit = load_settings(env_file=None, mail_storage_dir=Path("/srv/mail"))
    assert storage_dir(explicit) == Path("/srv/mail")
