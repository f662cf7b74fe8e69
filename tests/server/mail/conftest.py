"""The mail lab's Postfix as BaviMail's relay, one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.maillab import MailLab, MailLabError
from mail_lab_support import new_relay_lab


@pytest.fixture(scope="module")
def relay_lab() -> Iterator[MailLab]:
    """Postfix as the relay, shared by a module (tests use their own mailboxes)."""
    lab = new_relay_lab()
    try:
        lab.start()
    except MailLabError as exc:
        pytest.fail(f"mail lab unavailable: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()
