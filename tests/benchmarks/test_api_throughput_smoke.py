"""The keyed API benchmark in its smoke mode: real servers answer both modes, and every keyed
call shows in the ledger as one debit of one credit. No timing assertions."""

from __future__ import annotations

import math

import pytest

from benchmarks.api_throughput import (
    SMOKE,
    Charges,
    Report,
    Row,
    Sample,
    format_report,
    run,
)


@pytest.fixture(scope="module")
def report() -> Report:
    """The --smoke run (NSD lab, `bavlio serve` processes on SQLite), its users marked lab."""
    return run(**SMOKE)


@pytest.mark.lab
def test_smoke_produces_a_row_per_cell_with_every_call_answered(report: Report) -> None:
    cells = [(r.backend, r.processes, r.concurrency) for r in report.rows]
    assert cells == [
        (b, p, c) for b in SMOKE["backends"] for p in SMOKE["processes"] for c in SMOKE["levels"]
    ]
    for row in report.rows:
        assert row.open.ok == row.keyed.ok == SMOKE["requests"]
        assert row.open.failures == row.keyed.failures == 0
        assert row.keyed.per_second > 0
        assert not math.isnan(row.keyed.pct(95))


@pytest.mark.lab
def test_every_keyed_call_was_charged_once(report: Report) -> None:
    charges = report.charges["sqlite"]
    procs, levels = SMOKE["processes"], SMOKE["levels"]
    expected = len(procs) * (SMOKE["warmup"] + len(levels) * SMOKE["requests"])
    assert charges.keyed_calls == expected
    assert charges.debits == expected  # one ledger debit per answered keyed call
    assert charges.debited_credits == expected  # of one credit each
    assert charges.balance_drop == expected
    assert "ledger (sqlite): " in format_report(report)
    assert ": OK" in format_report(report)


def _sample(ms: list[float], failures: int = 0) -> Sample:
    return Sample([m / 1000 for m in ms], failures, seconds=len(ms) / 100, cpu_seconds=0.01)


def test_table_shows_ratios_and_the_goal() -> None:
    fast = _sample([1.0, 1.0, 2.0, 2.0, 3.0])
    slow = _sample([2.5, 2.5, 3.5, 3.5, 4.5])
    report = Report(
        rows=[Row("sqlite", 1, 1, fast, fast), Row("postgresql", 2, 1, fast, slow)], requests=5
    )
    report.charges = {"sqlite": Charges(10, 10, 10, 10), "postgresql": Charges(10, 9, 9, 9)}
    text = format_report(report)
    assert "| sqlite | 1 | 1 | 100 | 100 | 1.00 | 2.00 | 2.00 | +0.00 |" in text
    assert "| postgresql | 2 | 1 | 100 | 100 | 1.00 | 2.00 | 3.50 | +1.50 |" in text
    assert "sqlite x1 c=1: +0.00 ms MET" in text
    assert "postgresql x2 c=1: +1.50 ms NOT MET" in text
    assert "ledger (sqlite): 10 keyed 200s, 10 debits, 10 credits debited" in text
    assert "balance down 10: OK" in text
    assert "ledger (postgresql): 10 keyed 200s, 9 debits" in text
    assert "balance down 9: MISMATCH" in text


def test_percentiles_of_tiny_samples() -> None:
    assert _sample([4.0]).pct(95) == pytest.approx(4.0)
    assert math.isnan(_sample([]).pct(50))
    assert math.isnan(_sample([]).cpu_ms)
    assert _sample([]).per_second == 0.0
    assert _sample([1.0, 3.0]).pct(50) == pytest.approx(2.0)
