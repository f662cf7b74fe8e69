"""The exceptions of the job layer: what callers get, and what handlers raise on purpose.

``JobsError`` is the root; routes map ``JobNotFound`` to 404, ``JobInputError`` to 400 (413 when
``too_large``), ``UnknownKind`` to 400 and ``JobFinished`` to 409.
"""

from __future__ import annotations

__all__ = [
    "InvalidTransition",
    "JobBusy",
    "JobCancelled",
    "JobError",
    "JobFinished",
    "JobInputError",
    "JobNotFound",
    "JobsError",
    "SkipItem",
    "UnknownKind",
]


class JobsError(Exception):
    """Base class of every error the job layer raises on purpose."""


class JobNotFound(JobsError, LookupError):
    """No job with this id belongs to this owner (another owner's job is not found either)."""

    def __init__(self, job_id: str) -> None:
        super().__init__("no such job")
        self.job_id = job_id


class JobInputError(JobsError, ValueError):
    """A caller handed in something out of bounds; ``param`` names it."""

    def __init__(self, param: str, message: str, *, too_large: bool = False) -> None:
        super().__init__(f"{param} {message}")
        self.param = param
        self.too_large = too_large


class JobBusy(JobsError):
    """Another unfinished job holds the same exclusive key (e.g. the dataset is being verified)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"an unfinished job holds {key!r}")
        self.key = key


class UnknownKind(JobsError, ValueError):
    """No handler is registered for this job kind."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"no handler for job kind {kind!r}")
        self.kind = kind


class InvalidTransition(JobsError):
    """An event the transition table does not allow from the current state."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"{event!r} is not allowed in state {state!r}")
        self.state = state
        self.event = event


class JobFinished(InvalidTransition):
    """The job already reached a terminal state (cancelling it is a conflict)."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(state, "cancel")
        self.job_id = job_id


class JobError(Exception):
    """Raised by a handler to fail its job (or item) with a public ``code`` and ``message``.

    Any other exception fails the job with a generic code and message: its text may hold
    secrets or internals, so it goes to the log only.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SkipItem(Exception):
    """Raised by an item handler: the row is skipped (uncharged), ``code`` says why."""

    def __init__(self, code: str = "skipped") -> None:
        super().__init__(code)
        self.code = code


class JobCancelled(Exception):
    """Raised by a handler that saw ``ctx.is_cancelled()``: the job ends ``cancelled``."""
