"""One benchmark run's count of messages over its time, and the rate they make: the row the
message benchmarks (DKIM signing, sending) print side by side."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """What handled ``messages`` (a path or a run), in how many seconds."""

    name: str
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Messages per second (0 when no time was measured)."""
        return self.messages / self.seconds if self.seconds else 0.0
