"""Wiring a queue and a worker from settings, for ``bavlio worker`` and for the worker that
``bavlio serve`` embeds (the SQLite default runs jobs in the serving process: no extra one)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from server.db.engine import Database
from server.jobs.queue import JobQueue
from server.jobs.worker import Worker
from server.settings import Settings

__all__ = ["WorkerSetupError", "build_queue", "build_worker", "embedded", "load_registrars"]


class WorkerSetupError(ValueError):
    """A ``module:function`` in ``BAVLIO_JOB_HANDLERS`` that cannot be loaded."""


def load_registrars(spec: str) -> list[Callable[[JobQueue, Settings], Any]]:
    """Import each ``module:function`` of the comma-separated ``spec``."""
    found = []
    for entry in (part.strip() for part in spec.split(",")):
        module_name, sep, attribute = entry.partition(":")
        if not sep or not module_name or not attribute.isidentifier():
            raise WorkerSetupError(f"job handlers must be module:function, got {entry!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise WorkerSetupError(f"cannot import {module_name!r}: {exc}") from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise WorkerSetupError(f"{module_name!r} has no function {attribute!r}")
        found.append(function)
    return found


def build_queue(db: Database, settings: Settings) -> JobQueue:
    """A queue on ``db`` with every kind and hook ``settings.job_handlers`` registers."""
    queue = JobQueue(db)
    for registrar in load_registrars(settings.job_handlers):
        registrar(queue, settings)
    return queue


def build_worker(queue: JobQueue, settings: Settings) -> Worker:
    """A worker with the configured concurrency, lease and poll interval; on stop, running
    jobs get one lease period to finish before they are given back."""
    return Worker(
        queue,
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.job_lease_seconds,
        poll_seconds=settings.job_poll_seconds,
        grace_seconds=settings.job_lease_seconds,
    )


def embedded(settings: Settings) -> bool:
    """Whether ``bavlio serve`` should run a worker itself: yes on SQLite (the embedded
    default), no on PostgreSQL, where ``bavlio worker`` processes run the jobs; the
    ``embedded_worker`` setting decides when set."""
    if settings.embedded_worker is not None:
        return settings.embedded_worker
    return settings.database_url.startswith("sqlite")
