"""SQL for the prospect pool, one module per backend with the same functions.

``sqlite`` and ``postgresql`` each define ``insert_prospects``, ``refresh_stats`` and ``search``;
``common`` holds the statements that are identical on both. :func:`for_dialect` picks one.
"""

from __future__ import annotations

from types import ModuleType

from server.db.queries import postgresql, sqlite

__all__ = ["for_dialect"]


def for_dialect(name: str) -> ModuleType:
    """The query module for a SQLAlchemy dialect name (``sqlite`` or ``postgresql``)."""
    modules = {"sqlite": sqlite, "postgresql": postgresql}
    if name not in modules:
        raise ValueError(f"unsupported database backend {name!r}")
    return modules[name]
