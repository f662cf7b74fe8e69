"""``bavlio users create`` and ``bavlio credits grant`` end to end, then the keyed API with what
they printed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from keyed_helpers import keyed_app

from server.cli import main
from server.settings import load_settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("BAVLIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BAVLIO_DATABASE_URL", f"sqlite:///{tmp_path / 'b.sqlite3'}")
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    code = main(list(argv))
    return _read(capsys, code)


async def _arun(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, dict[str, object], str]:
    """The command in a thread: it runs its own event loop."""
    code = await asyncio.to_thread(main, list(argv))
    return _read(capsys, code)


def _read(capsys: pytest.CaptureFixture[str], code: int) -> tuple[int, dict[str, object], str]:
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


async def test_created_user_token_and_key_work_on_the_api(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, made, _ = await _arun(capsys, "users", "create", "ann@x.test", "--plan", "paid", "--key")
    assert code == 0
    assert made["plan"] == "paid"
    assert made["created"] is True
    assert str(made["api_key"]).startswith("bav_live_")
    assert (env / "b.secret").exists()
    code, granted, _ = await _arun(
        capsys, "credits", "grant", "ann@x.test", "40", "--reference", "r1"
    )
    assert code == 0
    assert (granted["granted"], granted["balance"]) == (40, 40)
    code, again, _ = await _arun(
        capsys, "credits", "grant", str(made["user_id"]), "40", "--reference", "r1"
    )
    assert code == 0
    assert (again["granted"], again["already_granted"], again["balance"]) == (0, True, 40)
    settings = load_settings(env_file=None)
    async with keyed_app(settings) as app:
        for credential in (made["session_token"], made["api_key"]):
            me = await app.client.get(
                "/api/v1/auth/me", headers={"Authorization": f"Bearer {credential}"}
            )
            assert me.status_code == 200
            assert me.json()["user_id"] == made["user_id"]
        balance = await app.client.get(
            "/api/v1/credits/balance", headers={"Authorization": f"Bearer {made['api_key']}"}
        )
        assert balance.json()["available_credits"] == 40
    code, second, _ = await _arun(capsys, "users", "create", "ann@x.test")
    assert (code, second["created"], second["user_id"]) == (0, False, made["user_id"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("users", "create", "not-an-email"), "not an email"),
        (("users", "create", "a@x.test", "--plan", "gold"), "unknown plan"),
        (("users", "create", "a@x.test", "--key", "--scopes", "root"), "unknown scope"),
        (("credits", "grant", "nobody@x.test", "5"), "no user"),
        (("credits", "grant", "usr_x", "0"), "between 1"),
        (("credits", "grant", "usr_x", "-5"), "between 1"),
    ],
)
def test_refusals_are_one_line_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
