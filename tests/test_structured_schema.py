"""Structured output's pieces: schemas from models, strictness, the JSON-schema checker."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from llmrelay._jsonschema import schema_error
from llmrelay._structured import StreamTail, output_spec
from llmrelay._types import ChatChunk, ToolCallDelta, Usage
from llmrelay.errors import InvalidRequestError


class Leaf(msgspec.Struct):
    value: int


class Tree(msgspec.Struct):
    leaf: Leaf
    children: list[Tree]


class WithDefault(msgspec.Struct):
    name: str
    tags: list[str] = []


def test_msgspec_schema_is_inlined_and_strict_when_all_required() -> None:
    spec = output_spec(Tree)
    assert spec is not None and spec.name == "Tree" and spec.kind == "msgspec"
    assert spec.schema["type"] == "object" and "$ref" not in spec.schema
    # Tree refers to itself: it stays in $defs for the inner reference
    assert set(spec.schema["$defs"]) == {"Leaf", "Tree"}
    assert spec.strict is True
    assert spec.parse('{"leaf": {"value": 1}, "children": []}') == Tree(Leaf(1), [])
    assert output_spec(Tree) is spec  # built once per type


def test_a_field_with_a_default_is_not_strict() -> None:
    spec = output_spec(WithDefault)
    assert spec is not None and spec.strict is False
    assert spec.response_format["json_schema"]["strict"] is False


def test_schema_dict_keeps_the_callers_schema_for_validation() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
    spec = output_spec(schema)
    assert spec is not None and spec.name == "output" and spec.strict is False  # a not required
    assert spec.schema["additionalProperties"] is False  # narrowed in what is sent
    assert "additionalProperties" not in schema  # the caller's dict is untouched
    assert spec.parse('{"a": "x", "b": 1}') == {"a": "x", "b": 1}  # validated as given


def test_openai_dict_keeps_its_name_and_strict() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "my schema!", "schema": {"type": "object"}, "strict": False},
    }
    spec = output_spec(fmt)
    assert spec is not None and spec.name == "my_schema_" and spec.strict is False
    assert spec.schema == {"type": "object"}  # a free-form object is left as it is
    assert output_spec({"type": "json_object"}) is None
    assert output_spec({"type": "text"}) is None


@pytest.mark.parametrize("bad", [3, "x", {"a": 1}, {"type": "xml"}, {"type": ["string", "blob"]}])
def test_bad_formats(bad: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        output_spec(bad)
    assert info.value.field == "params.response_format"


@pytest.mark.parametrize(
    ("value", "schema", "where"),
    [
        ("x", {"type": "integer"}, "expected integer"),
        (True, {"type": "integer"}, "expected integer"),
        (1.5, {"type": "integer"}, "expected integer"),
        (3, {"enum": [1, 2]}, "one of"),
        (True, {"const": 1}, "expected 1"),
        ({}, {"required": ["a"]}, "missing required property 'a'"),
        ({"a": 1, "b": 2}, {"properties": {"a": {}}, "additionalProperties": False}, "'b'"),
        ([1, "x"], {"items": {"type": "integer"}}, "$[1]"),
        ([1, 1], {"uniqueItems": True}, "repeated"),
        ([], {"minItems": 1}, "minItems"),
        ("ab", {"maxLength": 1}, "maxLength"),
        ("ab", {"pattern": "^a$"}, "pattern"),
        (5, {"maximum": 4}, "maximum"),
        (4, {"exclusiveMaximum": 4}, "exclusiveMaximum"),
        (7, {"multipleOf": 2}, "multiple"),
        ("x", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, "anyOf"),
        (1, {"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf"),
        (
            {"n": {"v": "x"}},
            {
                "properties": {"n": {"$ref": "#/$defs/N"}},
                "$defs": {"N": {"properties": {"v": {"type": "integer"}}}},
            },
            "$.n.v",
        ),
        (1, {"$ref": "#/$defs/missing"}, "cannot resolve"),
        (1, {"not": {"type": "integer"}}, "'not'"),
    ],
)
def test_schema_errors(value: Any, schema: dict[str, Any], where: str) -> None:
    err = schema_error(value, schema)
    assert err is not None and where in err


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        (1.0, {"type": "integer"}),
        (None, {"type": ["string", "null"]}),
        ({"a": [1, 2]}, {"properties": {"a": {"type": "array", "items": {"type": "integer"}}}}),
        ("2024-01-01", {"type": "string", "format": "date"}),  # format is an annotation
        (2, {"oneOf": [{"type": "integer"}, {"type": "string"}]}),
    ],
)
def test_schema_accepts(value: Any, schema: dict[str, Any]) -> None:
    assert schema_error(value, schema) is None


def test_stream_tail_turns_the_forced_tool_into_text_and_holds_the_tail() -> None:
    spec = output_spec(Leaf)
    assert spec is not None
    tail = StreamTail(spec, user_tools=False)
    out = tail.feed(ChatChunk(tool_calls=[ToolCallDelta(index=0, id="t", name="Leaf")]))
    out += tail.feed(ChatChunk(tool_calls=[ToolCallDelta(index=0, arguments_delta='{"val')]))
    out += tail.feed(ChatChunk(tool_calls=[ToolCallDelta(index=0, arguments_delta='ue": 7}')]))
    held = tail.feed(ChatChunk(finish_reason="tool_calls", usage=Usage(total_tokens=3)))
    assert held == [] and all(not c.tool_calls for c in out)
    assert "".join(c.text for c in out) == '{"value": 7}'
    last = tail.finish()
    assert len(last) == 1 and last[0].parsed == Leaf(7) and last[0].finish_reason == "stop"
    assert tail.error is None


def test_stream_tail_with_no_tail_adds_a_final_chunk_and_reports_errors() -> None:
    spec = output_spec(Leaf)
    assert spec is not None
    tail = StreamTail(spec, user_tools=False)
    assert tail.feed(ChatChunk(text='{"value": 1}')) == [ChatChunk(text='{"value": 1}')]
    assert tail.finish() == [ChatChunk(parsed=Leaf(1))]
    bad = StreamTail(spec, user_tools=False)
    bad.feed(ChatChunk(text='{"value": "x"}', finish_reason="stop"))
    assert bad.finish() == [ChatChunk(text='{"value": "x"}', finish_reason="stop")]
    assert bad.error is not None and "int" in bad.error


def test_an_empty_schema_is_not_strict() -> None:
    spec = output_spec({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
    assert spec is not None and spec.strict is False


def test_batch_run_records_encode_a_pydantic_parsed() -> None:
    pydantic = pytest.importorskip("pydantic")
    from llmrelay._runner import _encoder
    from llmrelay._types import ChatResponse, Message

    class P(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        a: int

    resp = ChatResponse(
        id="i",
        model="m",
        provider="p",
        text='{"a": 1}',
        message=Message(role="assistant", content='{"a": 1}'),
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(),
        parsed=P(a=1),
    )
    assert msgspec.json.decode(_encoder.encode({"response": resp}))["response"]["parsed"] == {
        "a": 1
    }
