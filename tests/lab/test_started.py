"""started: a lab for a fixture is started and stopped around the test; one that cannot start
fails the test with its reason (never a pass or a skip) and is not stopped."""

from __future__ import annotations

import pytest

from lab._service import started


class _Lab:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")
        if self.refuse:
            raise OSError("no daemon")

    def stop(self) -> None:
        self.calls.append("stop")


def _use(lab: _Lab) -> None:
    with started(lab, OSError, "fake lab") as running:
        assert running is lab
        assert lab.calls == ["start"]
        raise ZeroDivisionError


def test_started_then_stopped_even_when_the_test_raises() -> None:
    lab = _Lab(refuse=False)
    with pytest.raises(ZeroDivisionError):
        _use(lab)
    assert lab.calls == ["start", "stop"]


def test_a_lab_that_cannot_start_fails_the_test() -> None:
    lab = _Lab(refuse=True)
    with (
        pytest.raises(pytest.fail.Exception, match="fake lab unavailable: no daemon"),
        started(lab, OSError, "fake lab"),
    ):
        pytest.fail("the body never runs")  # pragma: no cover
    assert lab.calls == ["start"]
