"""Messages, requests and responses: validation naming the field, lossless dict round trips."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrelay import ChatChunk, Message, ToolCall, Usage
from llmrelay._types import ContentPart, ToolCallDelta, build_request, to_messages
from llmrelay.errors import InvalidRequestError, LLMRelayError
from llmrelay.providers import ChunkAccumulator, accumulate_chunks

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q":"cat","n":2}'},
            }
        ],
    },
    {"role": "tool", "content": '{"answer": "a cat"}', "tool_call_id": "call_1"},
    {"role": "assistant", "content": "A cat.", "name": "bot"},
]


def test_string_is_one_user_message() -> None:
    assert to_messages("hi") == [Message(role="user", content="hi")]


def test_dict_round_trip_is_lossless() -> None:
    msgs = to_messages(HISTORY)
    assert [m.to_dict() for m in msgs] == HISTORY
    assert msgs[2].tool_calls == [
        ToolCall(id="call_1", name="lookup", arguments={"q": "cat", "n": 2})
    ]
    assert msgs[1].content == [
        ContentPart(type="text", text="what is this?"),
        ContentPart(type="image_url", image_url="https://x/cat.png", detail="low"),
        ContentPart(type="image_url", image_url="data:image/png;base64,AAAA"),
    ]
    # and again through JSON (msgspec), as a cache would store them
    again = msgspec.json.decode(msgspec.json.encode(msgs), type=list[Message])
    assert again == msgs


def test_message_objects_pass_through_and_text() -> None:
    m = Message(
        role="assistant",
        content=[ContentPart(type="text", text="a"), ContentPart(type="text", text="b")],
    )
    assert to_messages([m])[0] is m
    assert m.text == "ab"
    assert Message(role="assistant", content=None).text == ""
    assert Message.from_dict({"role": "user", "content": "x"}).content == "x"


def test_openai_response_keys_are_accepted_and_dropped() -> None:
    m = Message.from_dict({"role": "assistant", "content": "x", "refusal": None, "annotations": []})
    assert m.to_dict() == {"role": "assistant", "content": "x"}


def test_tool_call_arguments_as_object_and_broken_json() -> None:
    d = {"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}
    assert ToolCall.from_dict(d).arguments == {"a": 1}
    broken = ToolCall.from_dict(
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    )
    assert broken.arguments == {} and broken.raw_arguments == "{oops"
    assert broken.to_dict()["function"]["arguments"] == "{oops"
    empty = ToolCall.from_dict({"id": "c", "function": {"name": "f", "arguments": ""}})
    assert empty.arguments == {}


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        (42, "messages"),
        ([42], "messages[0]"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": "x"}, {"content": "y"}], "messages[1].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "assistant", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "audio"}]}], "messages[0].content[0].type"),
        (
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            "messages[0].content[0].text",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[0].content[0].image_url",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "u", "detail": 1}}],
                }
            ],
            "messages[0].content[0].image_url.detail",
        ),
        ([{"role": "user", "content": ["x"]}], "messages[0].content[0]"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": "x", "tool_call_id": "c"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": "x", "tool_calls": []}], "messages[0].tool_calls"),
        ([{"role": "assistant", "content": "x", "tool_calls": {}}], "messages[0].tool_calls"),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}],
            "messages[0].tool_calls[0].id",
        ),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "x"}]}],
            "messages[0].tool_calls[0].type",
        ),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}],
            "messages[0].tool_calls[0].function",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": ""}}],
                }
            ],
            "messages[0].tool_calls[0].function.name",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 3}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        ([{"role": "user", "content": "x", "name": 3}], "messages[0].name"),
        ([{"role": "user", "content": "x", "colour": "red"}], "messages[0].colour"),
        ([Message(role="tool", content="x")], "messages[0].tool_call_id"),
        ([Message(role="bad", content="x")], "messages[0].role"),  # type: ignore[arg-type]
    ],
)
def test_bad_messages_name_the_field(messages: Any, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages(messages)
    assert info.value.field == field
    assert field in str(info.value)


def test_build_request_normalises_params() -> None:
    req = build_request(
        "hi",
        "gpt-4o",
        {
            "temperature": 0,
            "top_p": 1,
            "max_tokens": 5,
            "stop": "END",
            "seed": 7,
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            "user": "u",
            "metadata": {"team": "a"},
            "extra": {"num_ctx": 8192},
        },
        stream=True,
    )
    assert req.temperature == 0.0 and req.top_p == 1.0 and req.max_tokens == 5
    assert req.stop == ["END"] and req.seed == 7 and req.stream and req.model == "gpt-4o"
    assert req.extra == {"num_ctx": 8192} and req.metadata == {"team": "a"}
    assert build_request("x", None, {"temperature": None}).temperature is None
    assert build_request("x", None, {"tool_choice": "required"}).tool_choice == "required"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"temperature": 2.5}, "params.temperature"),
        ({"temperature": -0.1}, "params.temperature"),
        ({"temperature": float("nan")}, "params.temperature"),
        ({"temperature": "hot"}, "params.temperature"),
        ({"temperature": True}, "params.temperature"),
        ({"top_p": 1.5}, "params.top_p"),
        ({"max_tokens": 0}, "params.max_tokens"),
        ({"max_tokens": 1.5}, "params.max_tokens"),
        ({"seed": "x"}, "params.seed"),
        ({"stop": [1]}, "params.stop"),
        ({"stop": [""]}, "params.stop"),
        ({"tools": {}}, "params.tools"),
        ({"tools": [{"type": "x"}]}, "params.tools[0]"),
        ({"tools": [{"type": "function"}]}, "params.tools[0].function"),
        ({"tools": [{"type": "function", "function": {}}]}, "params.tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": 1}}]},
            "params.tools[0].function.parameters",
        ),
        ({"tool_choice": "always"}, "params.tool_choice"),
        ({"tool_choice": {"type": "function", "function": {}}}, "params.tool_choice"),
        ({"response_format": {"type": "yaml"}}, "params.response_format"),
        ({"response_format": {"type": "json_schema"}}, "params.response_format.json_schema"),
        ({"user": 3}, "params.user"),
        ({"metadata": {"a": 1}}, "params.metadata"),
        ({"extra": {1: 2}}, "params.extra"),
        ({"foo": 1}, "params.foo"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build_request("hi", None, params)
    assert info.value.field == field
    assert field in str(info.value)


def test_bad_model_name() -> None:
    with pytest.raises(InvalidRequestError, match="model=''"):
        build_request("hi", "", {})


def test_accumulate_chunks_reassembles_text_tools_usage() -> None:
    chunks = [
        ChatChunk(text="Hel", id="r1", model="m", provider="p"),
        ChatChunk(text="lo"),
        ChatChunk(tool_calls=[ToolCallDelta(index=0, id="c0", name="f", arguments_delta='{"a"')]),
        ChatChunk(tool_calls=[ToolCallDelta(index=1, id="c1", name="g")]),
        ChatChunk(tool_calls=[ToolCallDelta(index=0, arguments_delta=": 1}")]),
        ChatChunk(tool_calls=[ToolCallDelta(index=1, arguments_delta="{bad")]),
        ChatChunk(finish_reason="tool_calls"),
        ChatChunk(usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)),
    ]
    r = accumulate_chunks(chunks)
    assert r.text == "Hello" and r.id == "r1" and r.model == "m" and r.provider == "p"
    assert r.tool_calls[0] == ToolCall(id="c0", name="f", arguments={"a": 1})
    assert r.tool_calls[1].raw_arguments == "{bad" and r.tool_calls[1].arguments == {}
    assert r.finish_reason == "tool_calls" and r.usage.total_tokens == 7
    assert r.message.to_dict()["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    acc = ChunkAccumulator()
    assert acc.response().usage == Usage() and acc.response().message.content == ""


# ---------------------------------------------------------------- properties

_text = st.text(max_size=20)
_part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": "https://h/" + u}}, _text),
)
_args = st.dictionaries(
    st.text(max_size=5), st.one_of(st.integers(), _text, st.booleans()), max_size=3
)
_call = st.builds(
    lambda i, n, a: {
        "id": "c" + i,
        "type": "function",
        "function": {"name": "f" + n, "arguments": msgspec.json.encode(a).decode()},
    },
    _text,
    _text,
    _args,
)
_valid = st.one_of(
    st.builds(
        lambda r, c: {"role": r, "content": c},
        st.sampled_from(["system", "user", "assistant"]),
        st.one_of(_text, st.lists(_part, max_size=3)),
    ),
    st.builds(lambda c, i: {"role": "tool", "content": c, "tool_call_id": "t" + i}, _text, _text),
    st.builds(
        lambda calls: {"role": "assistant", "content": None, "tool_calls": calls},
        st.lists(_call, min_size=1, max_size=2),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_valid, min_size=1, max_size=5))
def test_valid_dicts_round_trip(history: list[dict[str, Any]]) -> None:
    assert [m.to_dict() for m in to_messages(history)] == history


_junk: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "tool_calls",
                    "tool_call_id",
                    "name",
                    "type",
                    "text",
                    "image_url",
                    "id",
                    "function",
                    "arguments",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    _junk,
    st.dictionaries(
        st.sampled_from(
            [
                "temperature",
                "top_p",
                "max_tokens",
                "stop",
                "seed",
                "tools",
                "tool_choice",
                "response_format",
                "user",
                "metadata",
                "extra",
                "zzz",
            ]
        ),
        _junk,
        max_size=3,
    ),
)
def test_junk_gives_only_typed_errors(messages: Any, params: dict[str, Any]) -> None:
    with contextlib.suppress(LLMRelayError):
        build_request(messages, None, params)


@settings(max_examples=300, deadline=None)
@given(st.lists(_junk, min_size=1, max_size=3))
def test_junk_message_lists_give_only_typed_errors(messages: list[Any]) -> None:
    try:
        to_messages(messages)
    except InvalidRequestError as e:
        assert e.field is not None and e.field.startswith("messages[")


def test_unhashable_role_is_a_typed_error() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages([{"role": ["user"], "content": "x"}])
    assert info.value.field == "messages[0].role"


# ---------------------------------------------------------------- to_dict and SDK objects


def test_to_dict_is_json_ready_and_keeps_openai_shapes() -> None:
    import json

    from llmrelay import ChatResponse, EmbeddingResponse
    from llmrelay._types import Choice, TokenLogprob

    call = ToolCall(id="c1", name="f", arguments={"q": "x"})
    msg = Message(role="assistant", content=None, tool_calls=[call])
    usage = Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    lp = [TokenLogprob(token="a", logprob=-0.5, top_logprobs=[TokenLogprob(token="b", logprob=-1)])]
    alt = Choice(
        index=1, text="B", message=Message(role="assistant", content="B"), finish_reason="stop"
    )
    resp = ChatResponse(
        id="r",
        model="m",
        provider="p",
        text="",
        message=msg,
        tool_calls=[call],
        finish_reason="tool_calls",
        usage=usage,
        logprobs=lp,
        alternatives=[alt],
    )
    d = resp.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["message"] == msg.to_dict()  # OpenAI-style, straight back into a history
    assert d["tool_calls"] == [call.to_dict()]
    assert d["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "cached_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
    }
    assert [c["text"] for c in d["choices"]] == ["", "B"] and "alternatives" not in d
    assert d["choices"][0]["message"] == d["message"]
    assert d["logprobs"][0]["top_logprobs"][0] == {
        "token": "b",
        "logprob": -1.0,
        "bytes": None,
        "top_logprobs": [],
    }
    assert (d["latency_s"], d["cached"], d["attempts"]) == (0.0, False, 1)
    assert to_messages([d["message"]]) == [msg]

    chunk = ChatChunk(tool_calls=[ToolCallDelta(index=0, id="c1", name="f")])
    cd = chunk.to_dict()
    assert json.loads(json.dumps(cd)) == cd
    assert cd["text"] == "" and cd["usage"] is None and cd["finish_reason"] is None
    assert cd["tool_calls"] == [{"index": 0, "id": "c1", "name": "f", "arguments_delta": ""}]
    assert ChatChunk(usage=usage).to_dict()["usage"]["total_tokens"] == 7

    emb = EmbeddingResponse(embeddings=[[0.5, 1.0]], model="e", provider="p", usage=usage)
    ed = emb.to_dict()
    assert json.loads(json.dumps(ed)) == ed and ed["embeddings"] == [[0.5, 1.0]]
    assert usage.to_dict()["prompt_tokens"] == 3


def test_openai_sdk_messages_are_accepted() -> None:
    from openai.types.chat import (
        ChatCompletion,
        ChatCompletionDeveloperMessageParam,
        ChatCompletionMessage,
        ChatCompletionMessageParam,
        ChatCompletionToolMessageParam,
        ChatCompletionUserMessageParam,
    )

    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "annotations": [],
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "lookup", "arguments": '{"q": "tides"}'},
                            }
                        ],
                    },
                }
            ],
        }
    )
    sdk_message = completion.choices[0].message
    assert isinstance(sdk_message, ChatCompletionMessage)
    developer: ChatCompletionDeveloperMessageParam = {"role": "developer", "content": "be brief"}
    user: ChatCompletionUserMessageParam = {
        "role": "user",
        "content": [{"type": "text", "text": "tides?"}],
        "name": "ann",
    }
    tool: ChatCompletionToolMessageParam = {
        "role": "tool",
        "content": "high at noon",
        "tool_call_id": "call_1",
    }
    history: list[ChatCompletionMessageParam] = [developer, user]
    msgs = to_messages([*history, sdk_message, tool])
    assert msgs[0] == Message(role="system", content="be brief")
    assert msgs[1].name == "ann" and msgs[1].text == "tides?"
    assert msgs[2].tool_calls == [ToolCall(id="call_1", name="lookup", arguments={"q": "tides"})]
    assert msgs[2].content is None and msgs[3].tool_call_id == "call_1"
    plain = ChatCompletionMessage(role="assistant", content="Hi")
    assert Message.from_dict(plain.model_dump()).content == "Hi"
    assert to_messages([plain]) == [Message(role="assistant", content="Hi")]


def test_objects_whose_model_dump_fails_are_typed_errors() -> None:
    class Broken:
        def model_dump(self) -> Any:
            raise RuntimeError("no")

    class NotADict:
        def model_dump(self) -> Any:
            return [1]

    for obj in (Broken(), NotADict()):
        with pytest.raises(InvalidRequestError) as info:
            to_messages([{"role": "user", "content": "x"}, obj])  # type: ignore[list-item]
        assert info.value.field == "messages[1]"
