"""One Postfix + postgrey mail lab shared by the SMTP tests of a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.maillab import MailLab, MailLabError, default_mail_lab


@pytest.fixture(scope="session")
def mail_lab() -> Iterator[MailLab]:
    """The default lab (company, catch-all, greylist, strict, dead MX) plus 200 bench domains."""
    lab = default_mail_lab(bench_mx=2, bench_count=200)
    try:
        lab.start()
    except MailLabError as exc:
        pytest.fail(f"mail lab unavailable: {exc}", pytrace=False)
    yield lab
    lab.stop()
