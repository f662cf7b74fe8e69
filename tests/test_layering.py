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


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module an ``import`` or ``from … import`` names (lazy ones inside functions
    included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_mail_never_imports_campaigns() -> None:
    """BaviMail's sending and inbound mail know nothing of campaigns: campaigns plug in through
    mail's hooks (the domain in-use check, the inbound store's after_add, the mail worker's
    companion loop), wired by the services and the CLI."""
    files = sorted((ROOT / "server" / "mail").rglob("*.py"))
    assert files, "server/mail has no modules"
    offenders = {
        str(f.relative_to(ROOT)): bad
        for f in files
        if (
            bad := {
                m
                for m in _imported_modules(f)
                if m == "server.campaigns" or m.startswith("server.campaigns.")
            }
        )
    }
    assert offenders == {}


def test_the_module_check_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from server.campaigns.stops import on_reply\n"
        "from server import campaigns\nimport server.campaigns.store\n",
        encoding="utf-8",
    )
    assert {"server.campaigns.stops", "server.campaigns", "server.campaigns.store"} <= (
        _imported_modules(source)
    )
