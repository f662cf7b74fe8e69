"""The send benchmark at tiny size: the lab starts, the raw loop and the outbox hand every
message to Postfix, the table prints ratios."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.send_throughput import format_table, run


@pytest.mark.lab
def test_every_run_hands_every_message_over() -> None:
    results = asyncio.run(run(12, 2, ["sqlite"], groups=(1, 5)))
    assert [r.name for r in results] == [
        "raw aiosmtplib loop",
        "outbox sqlite group=1",
        "outbox sqlite group=5",
    ]
    assert all(r.messages == 12 for r in results)
    table = format_table(results)
    assert "vs raw" in table
    assert "1.00" in table
