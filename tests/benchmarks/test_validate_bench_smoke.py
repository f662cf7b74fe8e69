"""The offline validate benchmark at tiny size: every implementation runs, counts are real."""

from __future__ import annotations

from benchmarks._addresses import generate
from benchmarks.validate_bench import CEILING, OURS, PEERS, offline_table
from emailintel.models import Verdict
from emailintel.verify import Validator


def test_offline_table_runs_every_implementation_on_the_same_addresses() -> None:
    rows = offline_table(300, rounds=2)
    assert [name for name, _, _ in rows] == list(PEERS)
    assert rows[0][0] == OURS
    assert rows[-1][0] == CEILING
    addresses = generate(300)
    validator = Validator(check_dns=False)
    ours = sum(validator.validate_offline(a).verdict != Verdict.INVALID for a in addresses)
    assert rows[0][2] == ours
    for name, rate, accepted in rows:
        assert rate > 0, name
        assert 0 < accepted < len(addresses), name  # the mix holds invalid addresses
