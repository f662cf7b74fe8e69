"""A long-running loop as an async context manager: entering starts :meth:`run` as a task,
leaving asks it to :meth:`stop` and waits for it to finish (the job and mail workers)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

__all__ = ["BackgroundLoop"]


class BackgroundLoop:
    """Subclasses define :meth:`run` (returns once stopped) and :meth:`stop`."""

    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """The loop; returns once :meth:`stop` was called."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current work and return."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._task is not None:
            await self._task
