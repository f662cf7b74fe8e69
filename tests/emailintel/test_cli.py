"""The emailintel command line: validate and patterns, table and JSON output, bulk input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab.dnslab import DnsLab

from emailintel import cli


def _run(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: str = "",
) -> tuple[int, str, str]:
    stream = io.StringIO(stdin)
    stream.isatty = lambda: False  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", stream)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_json_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        ["validate", "--offline", "--json", "jane@acme.io", "nope"], monkeypatch, capsys
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["address"] for line in lines] == ["jane@acme.io", "nope"]
    assert lines[1]["verdict"] == "invalid"
    assert "syntax_invalid" in lines[1]["reasons"]
    for line in lines:
        assert {"address", "verdict", "score", "reasons"} <= line.keys()


def test_validate_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["validate", "--offline", "bob@gmial.com"], monkeypatch, capsys)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["ADDRESS", "VERDICT", "SCORE"]
    assert row.startswith("bob@gmial.com")
    assert "bob@gmail.com" in row


def test_validate_csv_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_in = "name,email\nJane,jane@acme.io\nInfo,info@acme.io\n"
    code, out, _ = _run(["validate", "--offline", "--csv"], monkeypatch, capsys, stdin=csv_in)
    assert code == 0
    rows = out.splitlines()
    assert rows[0].startswith("address,normalized,verdict")
    assert [r.split(",")[0] for r in rows[1:]] == ["jane@acme.io", "info@acme.io"]


def test_validate_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a@acme.io\nb@mailinator.com\n", encoding="utf-8")
    code, out, _ = _run(
        ["validate", "--offline", "--json", "--file", str(path)], monkeypatch, capsys
    )
    assert code == 0
    assert [json.loads(line)["address"] for line in out.splitlines()] == [
        "a@acme.io",
        "b@mailinator.com",
    ]


def test_validate_missing_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["validate", "--file", "/nonexistent/x.csv"], monkeypatch, capsys)
    assert code == 2
    assert "No such file" in err


def test_validate_no_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["validate", "--offline"], monkeypatch, capsys)
    assert code == 2
    assert "no addresses" in err


def test_validate_bad_nameserver(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        ["validate", "--nameserver", "not a host:99999", "a@acme.io"], monkeypatch, capsys
    )
    assert code == 2
    assert err.startswith("emailintel validate:")


def test_patterns_table_and_known(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        [
            "patterns",
            "Jane Doe",
            "acme.com",
            "--known",
            "jsmith@acme.com=John Smith",
            "--limit",
            "3",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("domain patterns (1/1 known matched)")
    assert lines[2].split()[1] == "jdoe@acme.com"


def test_patterns_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["patterns", "Jane Doe", "acme.com", "--json"], monkeypatch, capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert abs(sum(r["probability"] for r in rows) - 1) < 1e-6
    assert rows[0]["email"].endswith("@acme.com")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["patterns", "Dr.", "acme.com"], "emailintel patterns:"),
        (["patterns", "Jane Doe", "not a domain"], "emailintel patterns:"),
        (["patterns", "Jane Doe", "acme.com", "--known", "no-equals-sign"], "ADDRESS=NAME"),
    ],
)
def test_patterns_errors(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run(argv, monkeypatch, capsys)
    assert code == 2
    assert message in err


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("emailintel")
    proc = subprocess.run(
        [str(exe), "validate", "--offline", "--json", "x@acme.io"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["address"] == "x@acme.io"


REPO = Path(__file__).resolve().parents[2]


def _cli(*argv: str | bytes, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """``python -m emailintel ARGV`` from this checkout, output kept as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "emailintel", *argv],
        capture_output=True,
        check=False,
        timeout=60,
        cwd=REPO,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("fmt", ["--json", "--csv", "--table"])
def test_non_utf8_argument_is_an_invalid_row(fmt: str) -> None:
    flags = [] if fmt == "--table" else [fmt]
    proc = _cli("validate", "--offline", *flags, b"\xffjohn@acme.io", "jane@acme.io")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b""
    text = proc.stdout.decode("utf-8")  # the output stays valid UTF-8
    if fmt == "--json":
        bad, good = (json.loads(line) for line in text.splitlines())
        assert bad["address"] == "\udcffjohn@acme.io"
        assert (bad["verdict"], bad["reasons"]) == ("invalid", ["syntax_invalid"])
        assert good["address"] == "jane@acme.io"
    else:
        rows = text.splitlines()
        assert len(rows) == 3
        assert rows[1].startswith("\\udcffjohn@acme.io")  # shown escaped, never as a raw byte
        assert "invalid" in rows[1]
        assert "syntax_invalid" in rows[1]


def test_non_utf8_file_line_is_an_invalid_row(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xe9ric@acme.io\njane@acme.io\n")
    for source in (["--file", str(path)], ["--file", "-"]):
        proc = _cli("validate", "--offline", "--json", *source, input=path.read_bytes())
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        bad, good = (json.loads(line) for line in proc.stdout.decode("utf-8").splitlines())
        assert (bad["verdict"], bad["reasons"]) == ("invalid", ["syntax_invalid"])
        assert good["address"] == "jane@acme.io"


@pytest.mark.parametrize(
    ("policy", "verdict", "score"),
    [
        (None, "valid", 70),  # DNS only 75, role -5: exactly valid_threshold
        ({"weights": {"role_account": -6}}, "risky", 69),  # one below it
        ({"valid_threshold": 71}, "risky", 70),
    ],
)
def test_validate_verdict_at_and_below_the_threshold(
    dns_lab: DnsLab,
    tmp_path: Path,
    policy: dict[str, object] | None,
    verdict: str,
    score: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["validate", "--json", "--nameserver", dns_lab.nameserver, "info@acme.test"]
    if policy is not None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(policy), encoding="utf-8")
        argv += ["--policy", str(path)]
    code, out, err = _run(argv, monkeypatch, capsys)
    assert code == 0, err
    line = json.loads(out)
    assert (line["verdict"], line["score"]) == (verdict, score)
    assert line["reasons"] == ["smtp_not_checked", "role_account"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "not valid JSON"), ('{"valid_threshold": 5}', "invalid risk policy"), ("[]", "mapping")],
)
def test_validate_bad_policy_file_fails_cleanly(
    tmp_path: Path,
    content: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content, encoding="utf-8")
    code, _, err = _run(
        ["validate", "--offline", "--policy", str(path), "a@acme.io"], monkeypatch, capsys
    )
    assert code == 2
    assert err.startswith("emailintel validate:")
    assert message in err


IDENTITY = ["--helo", "probe.verifier-lab.test", "--mail-from", "bounce@verifier-lab.test"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--retry-delays", "soon"], "expected seconds"),
        (["--retry-delays", "60,0"], "0 < s < 86400"),
        (["--retry-delays", "nan"], "0 < s < 86400"),
        (["--retry", "--no-retry"], "not allowed with"),
    ],
)
def test_verify_bad_retry_options_are_usage_errors(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        _run(["verify", "a@acme.test", *IDENTITY, *argv], monkeypatch, capsys)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_verify_bad_source_address_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify", "a@acme.test", *IDENTITY, "--source-address", "not-an-ip"]
    code, out, err = _run(argv, monkeypatch, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("emailintel verify: source address must be an IP address")
