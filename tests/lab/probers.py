"""A Prober set up for the loopback mail lab: lab identity, private MX allowed, no politeness
waits, short timeouts; tests override what they exercise."""

from __future__ import annotations

from typing import Any

from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts

HELO = "probe.verifier-lab.test"
SENDER = "bounce@verifier-lab.test"


def lab_prober(**overrides: Any) -> Prober:
    """``Prober(**defaults | overrides)`` for the lab."""
    config: dict[str, Any] = {
        "helo": HELO,
        "mail_from": SENDER,
        "allow_private_mx": True,
        "politeness": PolitenessConfig.unlimited(),
        "timeouts": Timeouts(connect=2, banner=5, command=5),
    }
    config.update(overrides)
    return Prober(**config)
