"""Wiring from settings: the relay, when ``bavlio serve`` sends mail itself, and
``bavlio mail-worker`` refusing to start without a relay."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from server.cli import main
from server.mail.setup import embedded_mail, relay_config
from server.settings import load_settings


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
