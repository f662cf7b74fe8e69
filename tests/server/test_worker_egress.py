"""A worker's SMTP prober: politeness buckets in Redis when ``BAVLIO_REDIS_URL`` is set, and
its egress pinned to a source address (``--egress``) or a SOCKS proxy (``--proxy``).

The fake MX answers every RCPT with the client address it saw, so the egress is checked on
the wire; the SOCKS proxy is the loopback lab one (tests/lab/sockslab.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from lab.fakesmtp import Behaviour, fake_smtp
from lab.sockslab import Socks5Server
from lab.stubdns import StubResolver

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError
from emailintel.models import DnsFacts, MxRecord
from emailintel.smtp.prober import Prober
from emailintel.smtp.redisbuckets import RedisBuckets
from emailintel.verify import Validator, verify
from server.cli import main
from server.services import configured_prober
from server.settings import Settings, SettingsError, load_settings

ENV = {
    "EMAILINTEL_HELO": "probe.verifier-lab.test",
    "EMAILINTEL_MAIL_FROM": "bounce@verifier-lab.test",
    "EMAILINTEL_ALLOW_PRIVATE_MX": "1",
}
RESOLVER: DnsResolver = StubResolver(
    {
        "egress.test": DnsFacts(
            domain="egress.test",
            status="ok",
            mx=(MxRecord(preference=10, host="mx.egress.test", addresses=("127.0.0.1",)),),
        )
    }
)


def settings(**values: Any) -> Settings:
    return load_settings(env_file=None, **values)


def prober_for(port: int, **values: Any) -> Prober:
    prober = configured_prober(ENV, settings=settings(**values))
    assert prober is not None
    prober.port = port  # the fake MX listens on a free port, not 25
    return prober


def test_redis_url_shares_the_politeness_buckets() -> None:
    shared = configured_prober(ENV, settings=settings(redis_url="redis://127.0.0.1:6379/0"))
    alone = configured_prober(ENV, settings=settings())
    assert shared is not None
    assert alone is not None
    assert isinstance(shared.politeness.store, RedisBuckets)
    assert alone.politeness.store is None  # in-process buckets, as before
    assert alone.source_address is None
    assert alone.proxies.default is None


def test_without_an_smtp_identity_there_is_no_prober() -> None:
    assert configured_prober({}, settings=settings(redis_url="redis://127.0.0.1:6379/0")) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("smtp_source_address", "not-an-address"),
        ("smtp_source_address", "127.0.0.300"),
        ("smtp_proxy", "http://127.0.0.1:8080"),
        ("smtp_proxy", "socks5://"),
        ("smtp_proxy", "socks5://host:port"),
    ],
)
def test_bad_egress_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(SettingsError):
        settings(**{field: value})


def test_worker_flags_are_checked_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--egress", "nowhere"]) == 2
    assert "BAVLIO_SMTP_SOURCE_ADDRESS" in capsys.readouterr().err
    assert main(["worker", "--proxy", "ftp://x"]) == 2
    assert "BAVLIO_SMTP_PROXY" in capsys.readouterr().err


def test_a_proxy_emailintel_refuses_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="socks"):
        configured_prober(ENV, settings=settings(smtp_proxy="socks5://127.0.0.1:99999"))


@pytest.mark.lab
async def test_egress_address_is_what_the_mx_sees() -> None:
    behaviour = Behaviour(rcpt_reply="250 2.1.5 seen {ip}")
    validator = Validator(resolver=RESOLVER)
    with fake_smtp(behaviour, host="127.0.0.1") as fake:
        pinned = await verify(
            "ann@egress.test",
            prober=prober_for(fake.port, smtp_source_address="127.0.0.3"),
            validator=validator,
        )
        default = await verify("bob@egress.test", prober=prober_for(fake.port), validator=validator)
    assert {"ann@egress.test", "bob@egress.test"} <= set(behaviour.received)
    assert pinned.smtp is not None
    assert pinned.smtp.reply is not None
    assert pinned.smtp.reply.message.endswith("seen 127.0.0.3")
    assert default.smtp is not None
    assert default.smtp.reply is not None
    assert default.smtp.reply.message.endswith("seen 127.0.0.1")


@pytest.mark.lab
async def test_proxy_carries_the_workers_probes() -> None:
    validator = Validator(resolver=RESOLVER)
    with fake_smtp(Behaviour()) as fake:
        async with Socks5Server() as proxy:
            result = await verify(
                "ann@egress.test",
                prober=prober_for(fake.port, smtp_proxy=proxy.url),
                validator=validator,
            )
    assert result.smtp is not None
    assert proxy.connects == [("127.0.0.1", fake.port)]
