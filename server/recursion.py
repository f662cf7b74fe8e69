"""Undo py_ecc's recursion limit, which turns deeply nested input into a crash of the process.

py_ecc (imported by x402gw's chain stack: eth_account, web3) raises the interpreter's recursion
limit to 100,000 at import. C code that recurses (``json``, ``repr`` of nested data, ``re``) then
overflows the C stack and the process dies with SIGSEGV long before it reaches that limit;
at CPython's default of 1,000 the same input raises :class:`RecursionError` instead.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["RECURSION_LIMIT", "restore_recursion_limit"]

RECURSION_LIMIT = 1000
"""CPython's default recursion limit."""


def restore_recursion_limit() -> None:
    """Import py_ecc now (it raises the limit once, at its import), then lower the limit.

    py_ecc itself, not x402gw: x402gw loads its chain stack lazily, so importing the package
    would leave py_ecc's import (and its raise) for later, after the limit was lowered.
    """
    importlib.import_module("py_ecc")
    if sys.getrecursionlimit() > RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)
