"""Labs started for a fixture: a DNS lab, a mail lab, or a mail lab with the DNS lab serving its
zones; each fails the test clearly when its daemon cannot start and is stopped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._service import started
from .dnslab import DnsLab, LabError
from .maillab import MailLab, MailLabError

__all__ = ["mail_stack", "running_dns", "running_mail"]


def running_dns(lab: DnsLab) -> contextlib.AbstractContextManager[DnsLab]:
    """Start ``lab`` (fail the test clearly if NSD cannot); stop it afterwards."""
    return started(lab, LabError, "DNS lab")


def running_mail(lab: MailLab) -> contextlib.AbstractContextManager[MailLab]:
    """Start ``lab`` (fail the test clearly if Postfix cannot); stop it afterwards."""
    return started(lab, MailLabError, "mail lab")


@contextlib.contextmanager
def mail_stack(lab: MailLab) -> Iterator[tuple[MailLab, DnsLab]]:
    """Start ``lab`` and an NSD serving its zones (fail the test clearly if either cannot);
    stop both afterwards."""
    with running_mail(lab), running_dns(DnsLab(lab.dns_zones())) as dns:
        yield lab, dns
