"""``emailintel verify`` and ``emailintel find`` against the Postfix lab (real processes' output)."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lab.dnslab import DnsLab
from lab.maillab import MailLab

from emailintel.cli import main


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


# --- greylisting from the command line (hardening 18) ----------------------------------------------

REPO = Path(__file__).resolve().parents[3]


def fresh(mail_dns: DnsLab, mail_lab: MailLab) -> list[str]:
    """base() from a client network no earlier test used: postgrey greylists it afresh."""
    return [*base(mail_dns), "--source-address", mail_lab.fresh_source()]


def test_verify_argument_returns_greylisting_at_once(
    mail_dns: DnsLab, mail_lab: MailLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "info@greylist.test", "--json", *fresh(mail_dns, mail_lab)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["verdict"] == "unknown"
    assert line["reasons"][0] == "greylisted"
    assert line["smtp"]["greylisted"] is True
    assert line["smtp"]["retry_after"] > 0


def test_verify_argument_with_retry_waits_and_says_so(
    mail_dns: DnsLab, mail_lab: MailLab, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify", "info@greylist.test", "--json", "--retry", "--retry-delays", "3"]
    assert main([*argv, *fresh(mail_dns, mail_lab)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["verdict"] == "valid"
    assert "emailintel verify: 1 greylisted, next retry at " in err


def test_verify_file_writes_each_result_once_final(
    mail_dns: DnsLab, mail_lab: MailLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("nobody.here@greylist.test\ninfo@greylist.test\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    argv = ["verify", "-f", str(source), "--csv", "-o", str(out), "--retry-delays", "3"]
    assert main([*argv, *fresh(mail_dns, mail_lab)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["address"], r["verdict"]) for r in rows] == [
        ("nobody.here@greylist.test", "invalid"),
        ("info@greylist.test", "valid"),
    ]
    assert "1 greylisted, next retry at " in capsys.readouterr().err


def _read_until(
    proc: subprocess.Popen[bytes], tty: int, done: Callable[[str, str], bool], bound: float = 30.0
) -> tuple[str, str]:
    """Collect the child's stdout and terminal output until ``done(stdout, terminal)`` holds."""
    assert proc.stdout is not None
    out, term = b"", b""
    sources: list[object] = [proc.stdout, tty]
    limit = time.monotonic() + bound
    while not done(out.decode(errors="replace"), term.decode(errors="replace")):
        left = limit - time.monotonic()
        assert left > 0, f"gave up waiting; stdout={out!r} terminal={term[-500:]!r}"
        assert sources, f"the command ended; stdout={out!r} terminal={term[-500:]!r}"
        ready, _, _ = select.select(sources, [], [], min(left, 0.5))
        for source in ready:
            try:
                chunk = os.read(tty if source is tty else proc.stdout.fileno(), 65536)
            except OSError:  # EIO: the terminal's other end is closed
                chunk = b""
            if not chunk:
                sources.remove(source)
            elif source is tty:
                term += chunk
            else:
                out += chunk
    return out.decode(errors="replace"), term.decode(errors="replace")


def test_verify_file_on_a_terminal_streams_rows_and_shows_the_wait(
    mail_dns: DnsLab, mail_lab: MailLab, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("nobody.here@greylist.test\ninfo@greylist.test\n", encoding="utf-8")
    master, slave = pty.openpty()  # stderr is a real terminal, so the progress bar is on
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 250, 0, 0))  # 250 columns
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emailintel",
            "verify",
            "-f",
            str(source),
            *fresh(mail_dns, mail_lab),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    os.close(slave)
    try:
        # With the default schedule the retry is a minute away: the refused address and the
        # wait must both show long before that.
        out, term = _read_until(
            proc,
            master,
            lambda out, term: len(out.splitlines()) >= 2 and "next retry at " in term,
        )
        header, row = out.splitlines()[:2]
        assert header.split()[:3] == ["ADDRESS", "VERDICT", "SCORE"]
        assert row.split()[:2] == ["nobody.here@greylist.test", "invalid"]
        assert "1 greylisted, next retry at " in term
        assert proc.poll() is None  # still waiting for the retry
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
        os.close(master)
