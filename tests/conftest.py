"""Session-wide fixtures; the labs themselves live in tests/lab."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.dnslab import DnsLab, LabError, default_lab


@pytest.fixture(scope="session")
def dns_lab() -> Iterator[DnsLab]:
    """A real NSD on 127.0.0.1:<port> serving the standard lab zones (fails if NSD is missing)."""
    lab = default_lab()
    try:
        lab.start()
    except LabError as exc:
        pytest.fail(f"DNS lab unavailable: {exc}", pytrace=False)
    yield lab
    lab.stop()
