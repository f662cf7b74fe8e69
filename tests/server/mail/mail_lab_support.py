"""The mail lab as BaviMail's relay: one Postfix listener delivering into lab Maildirs, and
helpers that read those mailboxes back."""

from __future__ import annotations

import email
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import running_mail

USERS = (
    "john.smith",
    "jane.doe",
    "nopr",
    "tls",
    "reuse",
    "bench",
    "part",
    *(f"kill_{db}_{probe}" for db in ("sqlite", "postgresql") for probe in ("log", "none")),
)


def new_relay_lab() -> MailLab:
    """A lab whose ``relay`` listener (no in-flow delay) delivers for inbox.test."""
    return MailLab(
        listeners=[Listener("relay", "mx.relay.test", 2, profile="bench")],
        domains=[MailDomain("inbox.test", mx=("relay",), users=USERS)],
    )


def maildir(lab: MailLab, user: str, domain: str = "inbox.test") -> Path:
    assert lab.dir is not None
    return lab.dir / "mail" / domain / user


def delivered(lab: MailLab, user: str, domain: str = "inbox.test") -> list[bytes]:
    """Raw messages delivered to ``user`` so far (new and cur)."""
    box = maildir(lab, user, domain)
    files = [f for sub in ("new", "cur") if (box / sub).is_dir() for f in (box / sub).iterdir()]
    return [f.read_bytes() for f in sorted(files)]


def wait_delivered(lab: MailLab, user: str, count: int, guard: float = 120.0) -> list[bytes]:
    """Wait until ``count`` messages reached ``user`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + guard
    while True:
        got = delivered(lab, user)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def started_relay_lab() -> Iterator[MailLab]:
    """A started relay lab for a module fixture (``yield from``), stopped afterwards; a conftest
    here would shadow tests/server/conftest.py's module for ``from conftest import``."""
    with running_mail(new_relay_lab()) as lab:
        yield lab
