"""A lab service usable as a context manager: ``with Lab(...) as lab:`` starts and stops it; and
:func:`started`, the same for a fixture, failing the test clearly when the lab cannot start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Protocol, Self, TypeVar

import pytest


class Service:
    """Base for lab servers: subclasses implement ``start`` (returning self) and ``stop``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


Lab = TypeVar("Lab", bound=_Startable)


@contextmanager
def started(lab: Lab, refused: type[Exception], what: str) -> Iterator[Lab]:
    """``lab`` started, stopped afterwards; the test fails (no traceback) when it raises
    ``refused`` on start, since a lab test must not pass or skip without its ``what``."""
    try:
        lab.start()
    except refused as exc:
        pytest.fail(f"{what} unavailable: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()
