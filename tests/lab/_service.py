"""A lab service usable as a context manager: ``with Lab(...) as lab:`` starts and stops it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


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
