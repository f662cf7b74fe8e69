"""The job kinds this deployment runs: ``register(queue, settings)`` is the default
``BAVLIO_JOB_HANDLERS`` entry, called by ``bavlio worker`` (and by ``bavlio serve`` for the
embedded worker). Each resource package adds its kinds here (find, verify, bulk find, dataset
verification, lead finding) together with the terminal hook that settles credit reservations.
"""

from __future__ import annotations

from server.jobs.queue import JobQueue
from server.settings import Settings

__all__ = ["register"]


def register(queue: JobQueue, settings: Settings) -> None:
    """Register every job kind and terminal hook (none yet: the resource packages add theirs)."""
