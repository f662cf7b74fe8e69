"""Suppression values and the CSV import, pure: normalising, lookup keys, header detection,
per-line errors, bounds; properties over any input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.suppression.csvimport import MAX_ROWS, CsvProblem, file_from_body, parse_csv
from server.suppression.normalise import InvalidValue, lookup_keys, normalise


def test_normalise_case_idna_and_dots() -> None:
    assert normalise(" Ann.Lee@Bücher.DE. ") == ("email", "ann.lee@xn--bcher-kva.de")
    assert normalise("ACME.com.") == ("domain", "acme.com")
    assert normalise("xn--bcher-kva.de") == ("domain", "xn--bcher-kva.de")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("com", "invalid_domain"),
        ("", "invalid_domain"),
        ("-x.com", "invalid_domain"),
        ("1.2.3.4", "invalid_domain"),
        ("a" * 64 + ".com", "invalid_domain"),
        ("x" * 250 + ".com", "invalid_domain"),
        ("a@b", "invalid_email"),
        ("@x.com", "invalid_email"),
        ("a@@x.com", "invalid_email"),
        ("a b@x.com", "invalid_email"),
        (".a@x.com", "invalid_email"),
        ("a..b@x.com", "invalid_email"),
        ("a" * 65 + "@x.com", "invalid_email"),
        ("a@\ufffd.com", "invalid_email"),
    ],
)
def test_invalid_values(raw: str, code: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise(raw)
    assert caught.value.code == code


def test_lookup_keys_most_specific_first() -> None:
    assert lookup_keys("Ann@Mail.EU.Acme.com") == (
        "ann@mail.eu.acme.com",
        "mail.eu.acme.com",
        "eu.acme.com",
        "acme.com",
    )
    assert lookup_keys("not an address") == ()


def test_csv_one_column_without_header() -> None:
    parsed = parse_csv(b"ann@x.com\r\nacme.com\r\n\r\nnope\r\nANN@X.COM\r\n")
    assert parsed.values == [("email", "ann@x.com"), ("domain", "acme.com")]
    assert [(e.line, e.value, e.code) for e in parsed.errors] == [(4, "nope", "invalid_domain")]
    assert (parsed.rows, parsed.repeated, parsed.error_count) == (4, 1, 1)


def test_csv_named_columns() -> None:
    parsed = parse_csv("\ufeffName,E-Mail,Note\nAnn,ann@x.com,hi\nBo,acme.com,\n".encode())
    assert parsed.values == [("email", "ann@x.com")]
    assert [(e.line, e.code) for e in parsed.errors] == [(3, "invalid_email")]
    domains = parse_csv(b"domain\nacme.com\nann@x.com\n")
    assert domains.values == [("domain", "acme.com")]
    assert [(e.line, e.code) for e in domains.errors] == [(3, "invalid_domain")]
    short = parse_csv(b"name,email\nAnn\n")
    assert short.values == []
    assert short.rows == 0


def test_csv_layout_errors_and_bounds() -> None:
    with pytest.raises(CsvProblem) as caught:
        parse_csv(b"a,b\nann@x.com,2\n")
    assert caught.value.code == "csv_column_unknown"
    with pytest.raises(CsvProblem) as caught:
        parse_csv(b"".join(b"a%d@x.com\n" % i for i in range(MAX_ROWS + 1)))
    assert caught.value.too_large
    many = parse_csv(b"bad\n" * 150)
    assert many.error_count == 150
    assert len(many.errors) == 100


def test_csv_undecodable_bytes_fail_per_line() -> None:
    parsed = parse_csv(b"ann@x.com\n\xff\xfe@x.com\nbo@x.com\x00\n")
    assert parsed.values == [("email", "ann@x.com")]
    assert [e.line for e in parsed.errors] == [2, 3]


def test_file_from_body_forms() -> None:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="reason"\r\n\r\nasked\r\n'
        b'--B\r\nContent-Disposition: form-data; name="upload"; filename="s.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nacme.com\r\n--B--\r\n"
    )
    assert file_from_body("multipart/form-data; boundary=B", body) == (
        b"acme.com",
        {"reason": "asked"},
    )
    assert file_from_body("text/csv; charset=utf-8", b"x") == (b"x", {})
    for content_type, raw, code in (
        ("application/json", b"{}", "unsupported_media_type"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="reason"\r\n\r\nx\r\n--B--\r\n',
            "file_missing",
        ),
        ("multipart/form-data", b"garbage", "invalid_multipart"),
    ):
        with pytest.raises(CsvProblem) as caught:
            file_from_body(content_type, raw)
        assert caught.value.code == code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_csv_never_raises_unexpectedly(data: bytes) -> None:
    problem: CsvProblem | None = None
    try:
        parsed = parse_csv(data)
    except CsvProblem as exc:
        problem = exc
    if problem is not None:
        assert problem.code in ("csv_column_unknown", "too_many_rows")
        return
    assert len({value for _, value in parsed.values}) == len(parsed.values)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=300))
def test_file_from_body_never_raises_unexpectedly(content_type: str, body: str) -> None:
    with contextlib.suppress(CsvProblem):
        file_from_body(content_type, body.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_normalise_is_idempotent_or_refuses(raw: str) -> None:
    try:
        kind, value = normalise(raw)
    except InvalidValue:
        return
    assert normalise(value) == (kind, value)
    assert value == value.strip().lower()
