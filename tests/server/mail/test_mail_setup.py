"""Wiring from settings: the relay, when ``bavlio serve`` sends mail itself, ``bavlio
mail-worker`` refusing to start without a relay, and running its companion loop (the campaign
sequencer) until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from pydantic import SecretStr

from server.background import BackgroundLoop
from server.campaigns.sequencer import sequencer_loop
from server.campaigns.stops import on_refused
from server.cli import main
from server.mail import setup
from server.mail.setup import Companion, embedded_mail, relay_config
from server.services import Services
from server.settings import Settings, load_settings


def test_relay_config_from_settings() -> None:
    settings = load_settings(
        env_file=None,
        mail_relay_host="relay.internal",
        mail_relay_port=587,
        mail_relay_starttls=True,
        mail_relay_username="bavlio",
        mail_relay_password=SecretStr("s3cret"),
    )
    config = relay_config(settings)
    assert (config.host, config.port, config.starttls) == ("relay.internal", 587, True)
    assert config.password == "s3cret"
    assert "s3cret" not in repr(config)


def test_no_relay_no_config() -> None:
    with pytest.raises(ValueError, match="MAIL_RELAY_HOST"):
        relay_config(load_settings(env_file=None))


@pytest.mark.parametrize(
    ("overrides", "embedded"),
    [
        ({}, False),
        ({"mail_relay_host": "127.0.0.1"}, True),
        ({"mail_relay_host": "127.0.0.1", "embedded_mail_worker": False}, False),
        ({"embedded_mail_worker": True}, False),  # nothing to send through
        (
            {
                "mail_relay_host": "127.0.0.1",
                "database_url": "postgresql+asyncpg://u@127.0.0.1/x",
            },
            False,
        ),
    ],
)
def test_embedded_mail_worker(overrides: dict[str, object], embedded: bool) -> None:
    assert embedded_mail(load_settings(env_file=None, **overrides)) is embedded


def test_mail_worker_refuses_to_start_without_a_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BAVLIO_MAIL_RELAY_HOST", raising=False)
    monkeypatch.setenv("BAVLIO_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert main(["mail-worker"]) == 2
    assert "MAIL_RELAY_HOST" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_mail_worker_command_runs_the_campaign_sequencer_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bavlio mail-worker`` hands the worker the campaign sequencer as its companion and the
    campaign stop as its refusal hook."""
    called: list[object] = []

    async def recorded(
        settings: Settings, companion: Companion | None = None, on_refused: object = None
    ) -> None:
        called.extend((companion, on_refused))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BAVLIO_MAIL_RELAY_HOST", "127.0.0.1")
    monkeypatch.setenv("BAVLIO_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(setup, "run_mail_worker", recorded)
    assert main(["mail-worker"]) == 0
    assert called == [sequencer_loop, on_refused]


class _Companion(BackgroundLoop):
    """Asks the process to stop (SIGTERM, as an operator would) once it runs."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


@pytest.mark.parametrize("beside", [True, False])
async def test_mail_worker_runs_its_companion_until_sigterm(tmp_path: Path, beside: bool) -> None:
    settings = load_settings(
        env_file=None,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        secret_file=tmp_path / "bavlio.secret",
        mail_relay_host="127.0.0.1",
    )
    given: list[Services] = []
    loop = _Companion()

    def companion(svc: Services) -> BackgroundLoop | None:
        given.append(svc)
        if beside:
            return loop
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        return None

    await setup.run_mail_worker(settings, companion)
    assert [svc.settings for svc in given] == [settings]
    assert loop.stopped.is_set() is beside  # SIGTERM stopped the companion with the worker
