"""Where the finder keeps confirmed ``(address, owner name)`` pairs per domain, so later finds at a
domain rank its learned pattern first.

:class:`PatternStore` is the small protocol the finder needs; :class:`MemoryPatternStore` (the
default, per process) and :class:`SqlitePatternStore` (an on-disk file shared by processes) are
the two shipped here; :func:`pattern_store_from_env` picks one from ``EMAILINTEL_PATTERN_CACHE``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from emailintel.errors import ConfigError, EmailIntelError
from emailintel.patterns import normalize_domain

__all__ = [
    "ENV_VAR",
    "MemoryPatternStore",
    "PatternStore",
    "PatternStoreError",
    "SqlitePatternStore",
    "pattern_store_from_env",
]

ENV_VAR = "EMAILINTEL_PATTERN_CACHE"
MAX_ADDRESS = 320
MAX_NAME = 200


class PatternStoreError(EmailIntelError):
    """The store could not be read or written (locked past its timeout, corrupt, unwritable)."""


@runtime_checkable
class PatternStore(Protocol):
    """Confirmed pairs per (ASCII, lower-case) domain: read before a find, added after one."""

    async def known(self, domain: str) -> list[tuple[str, str]]:
        """The confirmed ``(address, owner name)`` pairs at ``domain``."""
        ...

    async def add(self, domain: str, address: str, name: str) -> None:
        """Remember that ``address`` at ``domain`` belongs to ``name``."""
        ...


def _bounds(max_domains: int, per_domain: int) -> None:
    if max_domains < 1 or per_domain < 1:
        raise ConfigError("pattern store bounds must be at least 1")


def _entry(address: str, name: str) -> tuple[str, str]:
    """The pair as stored: bounded lengths (hostile input never grows a row without limit)."""
    if not address or len(address) > MAX_ADDRESS:
        raise ConfigError(f"address to remember must be 1..{MAX_ADDRESS} characters")
    return address, name[:MAX_NAME]


class MemoryPatternStore:
    """Per-process store, bounded in domains (least recently used goes) and pairs per domain."""

    def __init__(self, *, max_domains: int = 10_000, per_domain: int = 20) -> None:
        _bounds(max_domains, per_domain)
        self.max_domains = max_domains
        self.per_domain = per_domain
        self._data: OrderedDict[str, OrderedDict[str, str]] = OrderedDict()

    async def add(self, domain: str, address: str, name: str) -> None:
        """Remember a confirmed address (a repeat refreshes it, its latest name wins); the
        least recently used domain goes when full."""
        key = normalize_domain(domain)
        address, name = _entry(address, name)
        entries = self._data.pop(key, None) or OrderedDict()
        entries.pop(address, None)
        entries[address] = name
        while len(entries) > self.per_domain:
            entries.popitem(last=False)
        self._data[key] = entries
        while len(self._data) > self.max_domains:
            self._data.popitem(last=False)

    async def known(self, domain: str) -> list[tuple[str, str]]:
        """The confirmed pairs of ``domain``, oldest first."""
        key = normalize_domain(domain)
        entries = self._data.get(key)
        if entries is None:
            return []
        self._data.move_to_end(key)
        return list(entries.items())

    def __len__(self) -> int:
        return len(self._data)


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pattern_domains ("
    " domain TEXT PRIMARY KEY, touched INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS pattern_domains_touched ON pattern_domains (touched)",
    "CREATE TABLE IF NOT EXISTS pattern_confirmed ("
    " domain TEXT NOT NULL, address TEXT NOT NULL, name TEXT NOT NULL,"
    " seq INTEGER NOT NULL, confirmed_at REAL NOT NULL, PRIMARY KEY (domain, address))",
)


class SqlitePatternStore:
    """An on-disk SQLite file, safe for several processes (WAL, busy timeout, one short
    transaction per call on a worker thread). Bounded: the newest ``per_domain`` pairs per
    domain, and the ``max_domains`` domains confirmed most recently (reads do not count, so
    a read takes no write lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_domains: int = 100_000,
        per_domain: int = 20,
        timeout: float = 10.0,
    ) -> None:
        _bounds(max_domains, per_domain)
        if not timeout > 0:
            raise ConfigError("pattern store timeout must be positive")
        self.path = Path(path)
        self.max_domains = max_domains
        self.per_domain = per_domain
        self.timeout = timeout
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise PatternStoreError(f"cannot open pattern store {self.path}: {exc}") from exc
        try:
            if not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")
                for statement in _SCHEMA:
                    conn.execute(statement)
                self._ready = True
        except sqlite3.Error as exc:
            conn.close()
            raise PatternStoreError(f"cannot use pattern store {self.path}: {exc}") from exc
        return conn

    def _known(self, key: str) -> list[tuple[str, str]]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT address, name FROM pattern_confirmed WHERE domain = ? ORDER BY seq LIMIT ?",
                (key, self.per_domain),
            ).fetchall()
        except sqlite3.Error as exc:
            raise PatternStoreError(f"cannot read pattern store {self.path}: {exc}") from exc
        finally:
            conn.close()
        return [(str(address), str(name)) for address, name in rows]

    def _add(self, key: str, address: str, name: str) -> None:
        now = time.time()
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            # A store-wide sequence (not the clock) orders confirmations: writes are serialized.
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(touched), 0) + 1 FROM pattern_domains"
            ).fetchone()
            conn.execute(
                "INSERT INTO pattern_confirmed (domain, address, name, seq, confirmed_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (domain, address) DO UPDATE SET"
                " name = excluded.name, seq = excluded.seq, confirmed_at = excluded.confirmed_at",
                (key, address, name, seq, now),
            )
            conn.execute(
                "DELETE FROM pattern_confirmed WHERE domain = ? AND address NOT IN ("
                " SELECT address FROM pattern_confirmed WHERE domain = ?"
                " ORDER BY seq DESC LIMIT ?)",
                (key, key, self.per_domain),
            )
            conn.execute(
                "INSERT INTO pattern_domains (domain, touched) VALUES (?, ?)"
                " ON CONFLICT (domain) DO UPDATE SET touched = excluded.touched",
                (key, seq),
            )
            (count,) = conn.execute("SELECT COUNT(*) FROM pattern_domains").fetchone()
            if count > self.max_domains:
                gone = [
                    (row[0],)
                    for row in conn.execute(
                        "SELECT domain FROM pattern_domains ORDER BY touched LIMIT ?",
                        (count - self.max_domains,),
                    )
                ]
                conn.executemany("DELETE FROM pattern_domains WHERE domain = ?", gone)
                conn.executemany("DELETE FROM pattern_confirmed WHERE domain = ?", gone)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise PatternStoreError(f"cannot write pattern store {self.path}: {exc}") from exc
        finally:
            conn.close()

    async def known(self, domain: str) -> list[tuple[str, str]]:
        """The confirmed pairs of ``domain``, oldest first."""
        return await asyncio.to_thread(self._known, normalize_domain(domain))

    async def add(self, domain: str, address: str, name: str) -> None:
        """Remember a confirmed address (a repeat refreshes it); trims to the bounds."""
        key = normalize_domain(domain)
        pair = _entry(address, name)
        await asyncio.to_thread(self._add, key, *pair)

    async def domains(self) -> int:
        """How many domains the file holds pairs for."""

        def count() -> int:
            conn = self._connect()
            try:
                return int(conn.execute("SELECT COUNT(*) FROM pattern_domains").fetchone()[0])
            except sqlite3.Error as exc:
                raise PatternStoreError(f"cannot read pattern store {self.path}: {exc}") from exc
            finally:
                conn.close()

        return await asyncio.to_thread(count)


def pattern_store_from_env(env: Mapping[str, str] | None = None) -> PatternStore:
    """``EMAILINTEL_PATTERN_CACHE=/path/file.sqlite3`` gives a :class:`SqlitePatternStore`;
    unset or empty, a :class:`MemoryPatternStore`."""
    path = (os.environ if env is None else env).get(ENV_VAR, "").strip()
    if not path:
        return MemoryPatternStore()
    return SqlitePatternStore(path)
