"""``emailintel verify`` and ``emailintel find`` against the Postfix lab (real processes' output)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from lab.dnslab import DnsLab

from emailintel.cli import main

pytestmark = pytest.mark.lab


def base(mail_dns: DnsLab) -> list[str]:
    return [
        "--helo", "probe.verifier-lab.test", "--mail-from", "bounce@verifier-lab.test",
        "--allow-private-mx", "--nameserver", mail_dns.nameserver, "--timeout", "5",
    ]  # fmt: skip


def test_verify_json_lines_carry_smtp_facts(
    mail_dns: DnsLab, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["verify", "john.smith@company.test", "ghost@company.test", "--json", *base(mail_dns)]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_address = {line["address"]: line for line in lines}
    assert by_address["john.smith@company.test"]["verdict"] == "valid"
    assert by_address["john.smith@company.test"]["smtp"]["reply"]["code"] == 250
    assert by_address["ghost@company.test"]["verdict"] == "invalid"
    assert "mailbox_not_found" in by_address["ghost@company.test"]["reasons"]


def test_verify_bulk_csv_in_csv_out_with_checkpoint(mail_dns: DnsLab, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "name,email\nA,info@company.test\nB,nobody9@company.test\nC,x@catchall.test\n"
    )
    out = tmp_path / "out.csv"
    checkpoint = tmp_path / "done.jsonl"
    argv = ["verify", "-f", str(source), "--csv", "-o", str(out), "--checkpoint", str(checkpoint)]
    assert main([*argv, *base(mail_dns)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    verdicts = {row["address"]: row["verdict"] for row in rows}
    assert verdicts == {
        "info@company.test": "valid",
        "nobody9@company.test": "invalid",
        "x@catchall.test": "risky",
    }
    assert {row["smtp_code"] for row in rows} == {"250", "550"}
    assert len(checkpoint.read_text().splitlines()) == 3
    # A second run over the same input finds everything done.
    assert main([*argv, *base(mail_dns)]) == 0
    assert list(csv.DictReader(io.StringIO(out.read_text()))) == []


def test_verify_without_identity_fails_cleanly(
    mail_dns: DnsLab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMAILINTEL_HELO", raising=False)
    code = main(["verify", "info@company.test", "--nameserver", mail_dns.nameserver])
    assert code == 2
    assert "EMAILINTEL_HELO" in capsys.readouterr().err


def test_verify_refuses_impersonating_helo(
    mail_dns: DnsLab, capsys: pytest.CaptureFixture[str]
) -> None:
    args = base(mail_dns)
    args[1] = "gmail.com"
    assert main(["verify", "info@company.test", *args]) == 2
    assert "HELO refused" in capsys.readouterr().err


def test_find_prints_the_address_and_exits_zero(
    mail_dns: DnsLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["find", "John Smith", "company.test", "--json", *base(mail_dns)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["found"] is True
    assert result["email"] == "john.smith@company.test"


def test_find_on_catch_all_exits_one_with_the_ranked_table(
    mail_dns: DnsLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["find", "Ann Lee", "catchall.test", *base(mail_dns)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("not found: catch_all")
    assert "PROBABILITY" in out
    assert "not probed" in out


def test_find_needs_two_names(mail_dns: DnsLab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["find", "Cher", "company.test", *base(mail_dns)]) == 2
    assert "first and last" in capsys.readouterr().err
