"""The keyed-overhead benchmark at tiny size: both routes answer 200 through its ASGI driver, and
a round stops at the first answer that is not a 200 (so its figures are of answered calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import keyed_overhead


async def test_keyed_overhead_runs_both_routes() -> None:
    out = await keyed_overhead.run(rounds=2, calls=5)
    assert set(out) == {"open", "keyed"}
    assert all(len(values) == 2 for values in out.values())
    assert all(value > 0 for values in out.values() for value in values)


async def test_keyed_round_refuses_a_failed_call(tmp_path: Path) -> None:
    app = keyed_overhead._app(tmp_path, None)
    driver = keyed_overhead._Driver(app)
    async with app.router.lifespan_context(app):
        with pytest.raises(RuntimeError, match="answered 401"):
            await keyed_overhead._round(driver, keyed_overhead.KEYED_PATH, [], 1, 0)
