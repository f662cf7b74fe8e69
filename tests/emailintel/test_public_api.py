"""The package's public API: everything in __all__ resolves, lazily, to the real object."""

from __future__ import annotations

import subprocess
import sys

import pytest

import emailintel


@pytest.mark.parametrize("name", emailintel.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(emailintel, name) is not None


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = emailintel.no_such_thing  # type: ignore[attr-defined]


def test_import_is_lazy() -> None:
    code = "import sys, emailintel; print('email_validator' in sys.modules, 'dns.asyncresolver' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


async def test_top_level_validate_is_the_pipeline() -> None:
    result = emailintel.validate_offline("jane@acme.io")
    assert isinstance(result, emailintel.RiskResult)
    assert result.normalized == "jane@acme.io"
