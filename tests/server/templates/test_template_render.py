"""The ``{{variable}}`` renderer: examples of every rule, and properties over any input."""

from __future__ import annotations

import html
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from server.templates.render import MAX_TAGS, fold, render, scan, variables


def test_substitutes_values_and_fallbacks() -> None:
    out = render("Hi {{ first_name }}, from {{company|your team}}!", {"first_name": "Ann"})
    assert out.text == "Hi Ann, from your team!"
    assert out.missing == ()
    assert out.complete


def test_missing_variable_is_reported_and_kept_visible() -> None:
    out = render("Hi {{first_name}} at {{company}} and {{ company }}", {})
    assert out.text == "Hi {{first_name}} at {{company}} and {{ company }}"
    assert out.missing == ("first_name", "company")
    assert not out.complete


def test_blank_null_and_nested_values_count_as_missing() -> None:
    out = render("{{a}}{{b}}{{c}}{{d|-}}", {"a": "  ", "b": None, "c": [1], "d": {"x": 1}})
    assert out.missing == ("a", "b", "c")
    assert out.text.endswith("-")


def test_explicit_empty_fallback() -> None:
    assert render("Hi {{first_name|}}!", {}).text == "Hi !"


def test_scalars_are_written_plainly() -> None:
    assert render("{{n}} {{f}} {{t}} {{z}}", {"n": 3, "f": 1.5, "t": True, "z": False}).text == (
        "3 1.5 true false"
    )


def test_case_and_separator_folding_exact_key_first() -> None:
    row = {"First Name": "Ann", "first_name": "Bea", "COMPANY": "Acme"}
    assert render("{{First Name}}", row).text == "Ann"
    assert render("{{first_name}}", row).text == "Bea"
    assert render("{{FIRST-NAME}}", row).text == "Ann"  # sorted: "First Name" < "first_name"
    assert render("{{company}}", row).text == "Acme"
    assert fold("  First -- Name ") == "first_name"


def test_html_values_are_escaped_text_values_are_not() -> None:
    row = {"name": '<b>Ann & "Co"</b>'}
    assert render("<p>{{name}}</p>", row, html=True).text == (
        "<p>&lt;b&gt;Ann &amp; &quot;Co&quot;&lt;/b&gt;</p>"
    )
    assert render("{{name}}", row).text == row["name"]
    assert render("<p>{{x|<i>friend</i>}}</p>", {}, html=True).text == "<p><i>friend</i></p>"


def test_values_are_not_expanded_again() -> None:
    out = render("{{a}}", {"a": "{{b}}", "b": "no"})
    assert out.text == "{{b}}"
    assert out.missing == ()


def test_malformed_braces_are_text_and_reported() -> None:
    out = render("{{ first_name! }} and {{ ok }} {{{x}}} }} {{", {"ok": "1", "x": "X"})
    assert out.text == "{{ first_name! }} and 1 {X} }} {{"
    assert [i.code for i in out.issues] == [
        "unclosed_tag",
        "stray_close",
        "stray_close",
        "unclosed_tag",
    ]
    spaced = render("{{ First Name }}", {"first_name": "Ann"})
    assert spaced.text == "Ann"
    nested = render("{{ {{a}} }}", {"a": "A"})
    assert nested.text == "{{ A }}"
    assert [i.code for i in nested.issues] == ["unclosed_tag", "stray_close"]


def test_bad_names_are_not_tags() -> None:
    for text in ("{{1abc}}", "{{}}", "{{ }}", "{{a|b|c}}", "{{" + "a" * 65 + "}}", "{{a\nb}}"):
        out = render(text, {"a": "x", "1abc": "x"})
        assert out.text == text
        assert out.issues


def test_tag_count_is_bounded() -> None:
    template = "{{a}}" * (MAX_TAGS + 3)
    out = render(template, {"a": "x"})
    assert out.text == "x" * MAX_TAGS + "{{a}}" * 3
    assert [i.code for i in out.issues] == ["too_many_tags"]
    assert len(scan(template)[0]) == MAX_TAGS


def test_variables_lists_names_once() -> None:
    assert variables("{{a}} {{ b|x }} {{a}}") == ("a", "b")


NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
PLAIN = st.text(alphabet=string.ascii_letters + string.digits + " ,.!<>&\"'\n", max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=400),
    st.dictionaries(st.text(max_size=10), st.none() | st.text() | st.integers()),
)
def test_never_raises_on_any_input(template: str, row: dict[str, object]) -> None:
    for as_html in (False, True):
        out = render(template, row, html=as_html)
        assert isinstance(out.text, str)
        assert len(out.issues) <= 50


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(PLAIN, NAMES, st.booleans()), max_size=12),
    st.dictionaries(NAMES, PLAIN.filter(lambda v: v.strip() != "")),
    st.booleans(),
)
def test_no_variable_with_a_value_is_left(
    parts: list[tuple[str, str, bool]], row: dict[str, str], as_html: bool
) -> None:
    template = "".join(f"{text}{{{{ {name}{'|fb' if fb else ''} }}}}" for text, name, fb in parts)
    out = render(template, row, html=as_html)
    for name in row:
        assert "{{ " + name + " }}" not in out.text
        assert "{{ " + name + "|fb }}" not in out.text
        assert name not in out.missing
    expected_missing = [n for _, n, fb in parts if n not in row and not fb]
    assert list(out.missing) == list(dict.fromkeys(expected_missing))
    assert out.issues == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=50), st.text(max_size=50))
def test_html_escaping_round_trips_and_text_is_verbatim(prefix: str, value: str) -> None:
    if not value.strip():
        return
    row = {"v": value}
    assert render("[{{v}}]", row, html=True).text == "[" + html.escape(value, quote=True) + "]"
    escaped = render("[{{v}}]", row, html=True).text
    assert "<" not in escaped[1:-1]
    assert ">" not in escaped[1:-1]
    assert render("[{{v}}]", row).text == f"[{value}]"
    out = render(prefix.replace("{", "(").replace("}", ")") + "{{v}}", row)
    assert out.text.endswith(value)
