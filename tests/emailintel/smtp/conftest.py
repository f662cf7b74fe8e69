"""One Postfix + postgrey mail lab shared by the SMTP tests of a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.dnslab import DnsLab
from lab.maillab import MailLab, default_mail_lab
from lab.mailstack import running_dns, running_mail

FAKE_SECOND_MX = "127.0.0.61"


@pytest.fixture(scope="session")
def mail_lab() -> Iterator[MailLab]:
    """The default lab (company, catch-all, greylist, strict, dead MX) plus 200 bench domains."""
    with running_mail(default_mail_lab(bench_mx=2, bench_count=200)) as lab:
        yield lab


@pytest.fixture(scope="session")
def mail_dns(mail_lab: MailLab) -> Iterator[DnsLab]:
    """NSD serving the mail lab's zones plus fake.test (MX 127.0.0.1, for the aiosmtpd fakes)
    and tenant.test, whose MX is named like an accept-all provider's (*.protection.lab.test);
    fakemulti.test has MX 10 at 127.0.0.1 and MX 20 at FAKE_SECOND_MX; badmx.test's MX has no
    address."""
    zones = mail_lab.dns_zones()
    zones["fake.test"] = [("@", "MX", "10 mx.fake.test."), ("mx", "A", "127.0.0.1")]
    zones["tenant.test"] = [("@", "MX", "10 mx1.tenant.protection.lab.test.")]
    zones["protection.lab.test"] = [("mx1.tenant", "A", "127.0.0.1")]
    zones["badmx.test"] = [("@", "MX", "10 mx.missing.badmx.test.")]
    zones["fakemulti.test"] = [
        ("@", "MX", "10 mx1"),
        ("@", "MX", "20 mx2"),
        ("mx1", "A", "127.0.0.1"),
        ("mx2", "A", FAKE_SECOND_MX),
    ]
    with running_dns(DnsLab(zones)) as lab:
        yield lab


@pytest.fixture(scope="session")
def fake_second_mx() -> str:
    """The address of fakemulti.test's second MX (its first is 127.0.0.1)."""
    return FAKE_SECOND_MX
