"""The tool registry's pure parts: arguments sorted into path, query and body; input schemas
merged from a body model and parameters; the untrusted-content envelope's output schema."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from server.mcp.registry import (
    UNTRUSTED,
    enveloped,
    input_schema,
    output_schema,
    path_names,
    split_arguments,
)
from server.mcp.tools import TOOLS

names = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
values = st.one_of(st.integers(), st.booleans(), st.text(max_size=5), st.none())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(names, values, max_size=8),
    st.frozensets(names, max_size=3),
    st.frozensets(names, max_size=3),
    st.booleans(),
)
def test_every_argument_lands_in_exactly_one_place(
    arguments: dict[str, Any], path: frozenset[str], query: frozenset[str], has_body: bool
) -> None:
    query = query - path
    split = split_arguments(arguments, tuple(path), tuple(query), has_body)
    assert set(split.path) == path & set(arguments)
    assert set(split.query) == {k for k in query & set(arguments) if arguments[k] is not None}
    for name, text in {**split.path, **split.query}.items():
        value = arguments[name]
        assert text == (
            {True: "true", False: "false"}[value] if isinstance(value, bool) else str(value)
        )
    if has_body:
        assert split.body == {k: v for k, v in arguments.items() if k not in path | query}
    else:
        assert split.body is None


def test_path_names_in_order() -> None:
    assert path_names("/a/{x}/b/{y_1}") == ("x", "y_1")
    assert path_names("/plain") == ()


class Inner(BaseModel):
    n: int


class Outer(BaseModel):
    inner: Inner
    note: str | None = None


def test_input_schema_adds_parameters_and_refuses_a_clash() -> None:
    schema = input_schema(Outer, {"item_id": {"type": "string"}}, {"limit": {"type": "integer"}})
    assert schema["required"] == ["inner", "item_id"]
    assert set(schema["properties"]) == {"inner", "note", "item_id", "limit"}
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid({"inner": {"n": 1}, "item_id": "x", "limit": 3})
    bare = input_schema(None, {}, {"limit": {"type": "integer"}})
    assert bare == {
        "type": "object",
        "additionalProperties": False,
        "properties": {"limit": {"type": "integer"}},
    }
    with pytest.raises(ValueError, match="both a parameter and a body field"):
        input_schema(Outer, {}, {"note": {"type": "string"}})


def test_untrusted_output_schema_fences_the_content_and_keeps_references() -> None:
    schema = output_schema(Outer, untrusted=True)
    Draft202012Validator.check_schema(schema)
    assert "$defs" in schema  # moved to the root, where "#/$defs/Inner" resolves
    assert "$defs" not in schema["properties"]["content"]
    validator = Draft202012Validator(schema)
    assert validator.is_valid(enveloped({"inner": {"n": 1}, "note": None}))
    assert not validator.is_valid(enveloped({"inner": {"n": "x"}, "note": None}))
    assert not validator.is_valid({"content": {"inner": {"n": 1}}})
    assert not validator.is_valid({UNTRUSTED: False, "content": {"inner": {"n": 1}}})
    assert output_schema(Outer, untrusted=False)["properties"]["inner"] == {"$ref": "#/$defs/Inner"}


def test_tool_names_are_unique_and_portable() -> None:
    names = [tool.name for tool in TOOLS]
    assert len(names) == len(set(names))
    assert all(name.isascii() and name.replace("_", "").isalnum() for name in names)


def test_every_keyed_json_operation_can_be_a_route_tool() -> None:
    """A new tool over any keyed JSON operation (campaigns next) is one RouteTool line: its
    parameters and body merge without clashes into valid schemas."""
    from server.mcp.registry import Hints, RouteTool
    from server.mcp.server import _bind
    from server.routes import operations

    ops = operations()
    by_id = {op.operation_id: op for op in ops}
    hints = Hints(read_only=True, destructive=False, idempotent=True)
    bound = 0
    for op in ops:
        json_only = op.request_content == "application/json" and op.media_types == (
            "application/json",
        )
        if not op.keyed or not json_only or op.request_body:
            continue
        tool = _bind(RouteTool(op.operation_id, op.operation_id, op.summary, hints), by_id)
        assert tool is not None
        for schema in (tool.spec.input_schema, tool.spec.output_schema):
            assert schema is not None
            assert schema["type"] == "object", op.operation_id
            Draft202012Validator.check_schema(schema)
        bound += 1
    assert bound > 50


def test_a_file_operation_cannot_be_a_route_tool() -> None:
    from server.mcp.registry import Hints, RouteTool
    from server.mcp.server import _bind
    from server.routes import operations

    by_id = {op.operation_id: op for op in operations()}
    [files] = [op for op in by_id.values() if op.keyed and op.media_types != ("application/json",)][
        :1
    ]
    hints = Hints(read_only=True, destructive=False, idempotent=True)
    with pytest.raises(ValueError, match="not a JSON operation"):
        _bind(RouteTool("x", files.operation_id, "x", hints), by_id)
