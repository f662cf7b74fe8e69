"""Session-wide fixtures and the automatic `lab` marker; the labs themselves live in tests/lab."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.dnslab import DnsLab, default_lab
from lab.mailstack import running_dns

# Fixture modules shared by several test directories (only the top-level conftest may list them).
pytest_plugins = ["lab.ledgerdb"]

# Fixtures that start (or connect to) a real daemon: NSD, Postfix/postgrey, anvil, PostgreSQL or
# Redis. A test using any of them, directly or through another fixture, is a `lab` test, so
# `pytest -m "not lab"` runs with no daemon at all.
LAB_FIXTURES = frozenset(
    {
        "dns_lab",  # NSD (tests/conftest.py)
        "mail_lab",  # Postfix + postgrey (tests/emailintel/smtp/conftest.py)
        "mail_dns",  # NSD for the mail lab (ditto)
        "relay_lab",  # Postfix as BaviMail's relay (tests/server/mail/test_mail_lab.py)
        "auth_relay_lab",  # Postfix with SASL AUTH (tests/server/mail/test_mail_relay_auth.py)
        "finder_lab",  # Postfix + NSD (tests/emailintel/test_finder.py)
        "route_lab",  # NSD (tests/emailintel/test_dns.py)
        "paid_dns",  # NSD (tests/server/test_paid_routes_e2e.py)
        "lab_resolver",  # NSD (tests/server/conftest.py)
        "anvil",  # anvil (tests/server/conftest.py)
        "anvil_session",  # anvil (tests/x402gw/conftest.py)
        "evm",  # anvil (ditto)
        "pg_database",  # PostgreSQL (tests/server/conftest.py)
        "pg_schema",  # PostgreSQL (ditto)
        "pg_migrated_pool",  # PostgreSQL (ditto)
        "pg_migrated",  # PostgreSQL (ditto)
        "pg_db",  # PostgreSQL (tests/lab/ledgerdb.py)
        "s3_server",  # SeaweedFS (tests/server/tabular/test_file_store.py)
        "redis_client",  # Redis (ditto)
        "clean_redis",  # Redis (ditto)
    }
)

# Parametrised fixtures whose given parameter needs a daemon (the other parameters do not).
LAB_PARAMS = {"backend": "postgresql", "backend_settings": "postgresql"}


def needs_lab(item: pytest.Item) -> bool:
    """Whether ``item`` uses a daemon-backed fixture or a daemon-backed fixture parameter."""
    if LAB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) == value for name, value in LAB_PARAMS.items())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a daemon `lab` (explicit marks stay for inline labs)."""
    for item in items:
        if needs_lab(item) and item.get_closest_marker("lab") is None:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def dns_lab() -> Iterator[DnsLab]:
    """A real NSD on 127.0.0.1:<port> serving the standard lab zones (fails if NSD is missing)."""
    with running_dns(default_lab()) as lab:
        yield lab
