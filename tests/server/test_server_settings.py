"""Settings: sources, precedence, and a one-line error naming the variable for each bad value."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from server.settings import PRICE_KEYS, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("BAVLIO_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_seed_prices() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./bavlio.sqlite3"
    assert settings.network == "eip155:8453"
    assert settings.chain_id == 8453
    prices = {path: settings.price(path) for path in PRICE_KEYS}
    assert prices == {
        "/email/validate": Decimal("0.003"),
        "/email/verify": Decimal("0.005"),
        "/email/find": Decimal("0.010"),
        "/linkedin/find-url": Decimal("0.008"),
        "/prospects/search": Decimal("0.012"),
    }


def test_environment_dotenv_and_toml_precedence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "bavlio.toml"
    toml.write_text(
        'port = 9001\nhost = "127.0.0.2"\nasset_name = "From TOML"\nnetwork = "eip155:1"\n'
    )
    (tmp_path / ".env").write_text("BAVLIO_PORT=9002\nBAVLIO_HOST=127.0.0.3\n")
    monkeypatch.setenv("BAVLIO_PORT", "9003")
    settings = load_settings(toml)
    assert settings.port == 9003  # environment beats .env and TOML
    assert settings.host == "127.0.0.3"  # .env beats TOML
    assert settings.asset_name == "From TOML"
    assert settings.chain_id == 1


def test_config_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[prices."email.validate"]\nusd = "0.004"\ncredits = 2\n')
    monkeypatch.setenv("BAVLIO_CONFIG", str(toml))
    settings = load_settings()
    assert settings.price("/email/validate") == Decimal("0.004")
    assert settings.price_table()["email.validate"].credits == 2
    assert settings.price_table()["email.verify"].credits == 1


def test_prices_and_plans_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAVLIO_PRICES", '{"email.find": {"credits": 5}}')
    monkeypatch.setenv("BAVLIO_PLANS", '{"team": {"rate_limit": "5/second"}}')
    monkeypatch.setenv("BAVLIO_DEFAULT_PLAN", "team")
    settings = load_settings()
    assert settings.price_table()["email.find"].credits == 5
    assert settings.price("/email/find") == Decimal("0.010")
    assert set(settings.plan_table()) == {"free", "paid", "team"}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BAVLIO_PRICES", '{"email.nope": {"credits": 1}}', "unknown price key"),
        ("BAVLIO_PRICES", '{"email.find": {"usd": "-1"}}', "positive"),
        ("BAVLIO_PRICES", '{"email.find": {"usd": "0.0000001"}}', "6 decimal"),
        ("BAVLIO_PRICES", '{"email.find": {"credits": -1}}', "greater than or equal"),
        ("BAVLIO_PRICES", '{"email.find": {"cents": 1}}', "Extra inputs"),
        ("BAVLIO_PLANS", '{"x": {"rate_limit": "lots"}}', "rate limit"),
        ("BAVLIO_DEFAULT_PLAN", "gold", "not a known plan"),
        ("BAVLIO_KEY_SECRET", "short", "at least 32"),
        ("BAVLIO_JWT_SECRET", "short", "at least 32"),
        ("BAVLIO_JWKS_URL", "file:///etc/passwd", "http"),
    ],
)
def test_bad_prices_plans_and_secrets_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_master_secret_sits_beside_the_sqlite_file(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/data/b.sqlite3")
    assert settings.master_secret_path() == tmp_path / "data" / "b.secret"
    pg = load_settings(database_url="postgresql://u@h/db")
    assert pg.master_secret_path() == Path("bavlio.secret")
    chosen = load_settings(secret_file=tmp_path / "s")
    assert chosen.master_secret_path() == tmp_path / "s"


def test_database_urls_are_normalised_to_async_drivers() -> None:
    assert load_settings(database_url="postgresql://u@h/db").database_url == (
        "postgresql+asyncpg://u@h/db"
    )
    assert load_settings(database_url="sqlite:///x.db").database_url == "sqlite+aiosqlite:///x.db"


def test_settler_key_is_secret() -> None:
    key = "0x" + "ab" * 32
    settings = load_settings(settler_key=key)
    assert key not in repr(settings)
    assert settings.settler_key is not None
    assert settings.settler_key.get_secret_value() == key


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BAVLIO_DATABASE_URL", "mysql://localhost/x"),
        ("BAVLIO_DATABASE_SCHEMA", "Not-An-Identifier"),
        ("BAVLIO_REDIS_URL", "http://localhost"),
        ("BAVLIO_RPC_URL", "ftp://node"),
        ("BAVLIO_NETWORK", "base"),
        ("BAVLIO_NETWORK", "eip155:"),
        ("BAVLIO_ASSET", "0x1234"),
        ("BAVLIO_PAY_TO", "0xZZ9589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        ("BAVLIO_SETTLER_KEY", "0x1234"),
        ("BAVLIO_FACILITATOR_URL", "not a url"),
        ("BAVLIO_PUBLIC_URL", "https://bavlio.test/" + "p" * 493),
        ("BAVLIO_PUBLIC_URL", "https://bavlio.test/a b"),
        ("BAVLIO_PUBLIC_URL", "https://bavlio.test/<x>"),
        ("BAVLIO_PUBLIC_URL", "https://bävlio.test"),
        ("BAVLIO_PORT", "70000"),
        ("BAVLIO_PORT", "eighty"),
        ("BAVLIO_LOG_LEVEL", "loud"),
        ("BAVLIO_ASSET_DECIMALS", "-1"),
        ("BAVLIO_READY_TIMEOUT", "0"),
        ("BAVLIO_PRICE_VALIDATE", "-0.003"),
        ("BAVLIO_PRICE_VERIFY", "abc"),
        ("BAVLIO_PRICE_FIND", "0.0000001"),
        ("BAVLIO_PRICE_LINKEDIN_FIND_URL", "5000"),
        ("BAVLIO_PRICE_PROSPECTS_SEARCH", "0"),
        ("BAVLIO_CAMPAIGN_HOLD_BOUNCE_RATE", "0"),
        ("BAVLIO_CAMPAIGN_HOLD_BOUNCE_RATE", "1.5"),
        ("BAVLIO_CAMPAIGN_HOLD_BOUNCE_RATE", "nan"),
        ("BAVLIO_CAMPAIGN_HOLD_BOUNCE_RATE", "five percent"),
        ("BAVLIO_CAMPAIGN_HOLD_MIN_SENDS", "0"),
        ("BAVLIO_CAMPAIGN_HOLD_MIN_SENDS", "2.5"),
        ("BAVLIO_CAMPAIGN_HOLD_MIN_SENDS", "1000001"),
    ],
)
def test_each_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    if variable == "BAVLIO_DATABASE_SCHEMA":
        monkeypatch.setenv("BAVLIO_DATABASE_URL", "postgresql://h/db")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.variable == variable
    assert str(info.value).startswith(f"invalid setting {variable}: ")
    assert "\n" not in str(info.value)


def test_the_longest_public_url_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """512 characters: with a token it still fits one List-Unsubscribe header line."""
    longest = "https://bavlio.test/" + "p" * 492
    monkeypatch.setenv("BAVLIO_PUBLIC_URL", longest)
    assert len(longest) == 512
    assert load_settings().public_url == longest


def test_campaign_hold_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings(env_file=None)
    assert (defaults.campaign_hold_bounce_rate, defaults.campaign_hold_min_sends) == (0.05, 50)
    monkeypatch.setenv("BAVLIO_CAMPAIGN_HOLD_BOUNCE_RATE", "0.1")
    monkeypatch.setenv("BAVLIO_CAMPAIGN_HOLD_MIN_SENDS", "1")
    settings = load_settings(env_file=None)
    assert (settings.campaign_hold_bounce_rate, settings.campaign_hold_min_sends) == (0.1, 1)


def test_cross_field_rules_name_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAVLIO_SETTLER_KEY", "0x" + "11" * 32)
    monkeypatch.setenv("BAVLIO_FACILITATOR_URL", "https://facilitator.example")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.variable == "BAVLIO_SETTLER_KEY/BAVLIO_FACILITATOR_URL"

    with pytest.raises(SettingsError) as info:
        load_settings(settler_key=None, facilitator_url=None, database_schema="s")
    assert info.value.variable == "BAVLIO_DATABASE_URL/BAVLIO_DATABASE_SCHEMA"


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path / "absent.toml")
    assert info.value.variable == "BAVLIO_CONFIG"
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(SettingsError) as info:
        load_settings(broken)
    assert info.value.variable == "BAVLIO_CONFIG"


def test_bad_value_in_toml_names_the_field(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('network = "nope"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(toml)
    assert info.value.variable == "BAVLIO_NETWORK"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
