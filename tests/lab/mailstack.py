"""Labs started for a fixture: a DNS lab, a mail lab, or a mail lab with the DNS lab serving its
zones; each fails the test clearly when its daemon cannot start and is stopped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from .dnslab import DnsLab, LabError
from .maillab import MailLab, MailLabError

__all__ = ["mail_stack", "running_dns", "running_mail"]


@contextlib.contextmanager
def running_dns(lab: DnsLab) -> Iterator[DnsLab]:
    """Start ``lab`` (fail the test clearly if NSD cannot); stop it afterwards."""
    try:
        lab.start()
    except LabError as exc:
        pytest.fail(f"DNS lab unavailable: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()


@contextlib.contextmanager
def running_mail(lab: MailLab) -> Iterator[MailLab]:
    """Start ``lab`` (fail the test clearly if Postfix cannot); stop it afterwards."""
    try:
        lab.start()
    except MailLabError as exc:
        pytest.fail(f"mail lab unavailable: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()


@contextlib.contextmanager
def mail_stack(lab: MailLab) -> Iterator[tuple[MailLab, DnsLab]]:
    """Start ``lab`` and an NSD serving its zones (fail the test clearly if either cannot);
    stop both afterwards."""
    with running_mail(lab), running_dns(DnsLab(lab.dns_zones())) as dns:
        yield lab, dns
