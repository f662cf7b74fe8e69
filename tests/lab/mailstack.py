"""A mail lab and the DNS lab serving its zones, started together for a test module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from .dnslab import DnsLab, LabError
from .maillab import MailLab, MailLabError

__all__ = ["mail_stack"]


@contextlib.contextmanager
def mail_stack(lab: MailLab) -> Iterator[tuple[MailLab, DnsLab]]:
    """Start ``lab`` and an NSD serving its zones (fail the test clearly if either cannot);
    stop both afterwards."""
    try:
        lab.start()
    except MailLabError as exc:
        pytest.fail(f"mail lab unavailable: {exc}", pytrace=False)
    dns = DnsLab(lab.dns_zones())
    try:
        dns.start()
    except LabError as exc:
        lab.stop()
        pytest.fail(f"DNS lab unavailable: {exc}", pytrace=False)
    try:
        yield lab, dns
    finally:
        dns.stop()
        lab.stop()
