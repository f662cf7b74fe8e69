"""The three packages depend one way: server -> (emailintel, x402gw); the libraries never upward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"emailintel": {"x402gw", "server"}, "x402gw": {"emailintel", "server"}}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_library_never_imports_upward(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    offenders = {
        str(f.relative_to(ROOT)): bad
        for f in files
        if (bad := _imported_top_levels(f) & FORBIDDEN[package])
    }
    assert offenders == {}


def test_the_ledger_rules_are_pure() -> None:
    """The rules every ledger store applies import no I/O: the standard library's pure parts and
    the error tree only (the in-memory store and the SQL statements both build on them)."""
    pure = {"__future__", "hashlib", "re", "collections", "dataclasses", "datetime", "enum"}
    pure |= {"typing", "x402gw"}
    rules = ROOT / "x402gw" / "ledger" / "rules.py"
    assert _imported_top_levels(rules) <= pure
    tree = ast.parse(rules.read_text(encoding="utf-8"))
    ours = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("x402gw")
    }
    assert ours == {"x402gw.errors"}
