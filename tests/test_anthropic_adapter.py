"""The Anthropic adapter against httpx.MockTransport: message mapping, every SSE event, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmrelay import ToolCall, errors
from llmrelay._types import build_request
from llmrelay.providers import AnthropicAdapter, accumulate_chunks
from llmrelay.providers.anthropic import map_stop_reason
from provider_mocks import (
    API_KEY,
    ERROR_CASES,
    Server,
    check_error,
    error_reply,
    json_reply,
    split_every,
    sse,
    stream_reply,
)

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 2,
    },
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "w",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "noop"}},
]


def adapter() -> AnthropicAdapter:
    return AnthropicAdapter(deployment="dep", base_url="https://anthropic.test", api_key=API_KEY)


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


STREAM = sse(
    ev(
        "message_start",
        message={
            "id": "msg_s",
            "model": "claude-haiku-4-5",
            "content": [],
            "usage": {"input_tokens": 20, "output_tokens": 1},
        },
    ),
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ev("ping"),
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hel"}),
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "lo"}),
    ev("content_block_stop", index=0),
    ev(
        "content_block_start",
        index=1,
        content_block={"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}},
    ),
    ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": ""}),
    ev(
        "content_block_delta",
        index=1,
        delta={"type": "input_json_delta", "partial_json": '{"city": "Pa'},
    ),
    ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": 'ris"}'}),
    ev("content_block_stop", index=1),
    ev("content_block_start", index=2, content_block={"type": "thinking", "thinking": ""}),
    ev("content_block_delta", index=2, delta={"type": "thinking_delta", "thinking": "hmm"}),
    ev("some_future_event", foo=1),
    ev(
        "message_delta",
        delta={"stop_reason": "tool_use", "stop_sequence": None},
        usage={"output_tokens": 15},
    ),
    ev("message_stop"),
    event_names=True,
)


def test_message_mapping() -> None:
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": [{"type": "text", "text": "be kind"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
                {"type": "image_url", "image_url": "https://x/cat.jpg"},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
                {"id": "t2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "one"},
        {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "thanks"},
    ]
    req = build_request(
        history,
        None,
        {
            "temperature": 1.7,
            "top_p": 0.5,
            "stop": ["END"],
            "user": "u42",
            "tools": TOOLS,
            "tool_choice": "required",
            "extra": {"top_k": 5},
        },
    )
    body = adapter().chat_body(req, "claude-sonnet-4-5", stream=False)
    assert body["system"] == "be brief\n\nbe kind"
    assert body["max_tokens"] == 64_000  # the model's max output when none asked
    assert body["temperature"] == 1.0 and body["top_p"] == 0.5 and body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u42"} and body["top_k"] == 5
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"][0] == {
        "name": "get_weather",
        "description": "w",
        "input_schema": TOOLS[0]["function"]["parameters"],
    }
    assert body["tools"][1]["input_schema"] == {"type": "object", "properties": {}}
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}},
                {"type": "tool_use", "id": "t2", "name": "b", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": "two"}],
                },
            ],
        },
        {"role": "user", "content": "thanks"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ({"type": "function", "function": {"name": "noop"}}, {"type": "tool", "name": "noop"}),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    body = adapter().chat_body(
        build_request("x", None, {"tools": TOOLS, "tool_choice": choice}), "m", stream=False
    )
    assert body["tool_choice"] == expected
    none = adapter().chat_body(
        build_request("x", None, {"tools": TOOLS, "tool_choice": "none"}), "m", stream=False
    )
    assert "tools" not in none and "tool_choice" not in none


def test_defaults_json_mode_and_bad_image() -> None:
    body = adapter().chat_body(
        build_request("x", None, {"response_format": {"type": "json_object"}}),
        "unknown-model",
        stream=True,
    )
    assert body["max_tokens"] == 4096 and body["stream"] is True and "JSON" in body["system"]
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    body = adapter().chat_body(
        build_request(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
            None,
            {"response_format": schema, "max_tokens": 9},
        ),
        "m",
        stream=False,
    )
    # a JSON schema is a forced tool (the system prompt is left alone)
    assert body["system"] == "s" and body["max_tokens"] == 9
    assert body["tool_choice"] == {"type": "tool", "name": "s"}
    assert [t["name"] for t in body["tools"]] == ["s"]
    assert body["tools"][0]["input_schema"]["type"] == "object"
    # with tools of the call's own, the schema goes into the system prompt instead
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = adapter().chat_body(
        build_request(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
            None,
            {"response_format": schema, "tools": [tool]},
        ),
        "m",
        stream=False,
    )
    assert body["system"].startswith("s\n\n") and '"type":"object"' in body["system"]
    assert [t["name"] for t in body["tools"]] == ["f"] and "tool_choice" not in body
    bad = build_request(
        [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png,raw"}]}],
        None,
        {},
    )
    with pytest.raises(errors.InvalidRequestError) as info:
        adapter().chat_body(bad, "m", stream=False)
    assert info.value.field == "messages[0].content[0].image_url"


async def test_chat_request_and_response() -> None:
    server = Server(json_reply(MESSAGE))
    async with server.client() as client:
        r = await adapter().chat(
            client, build_request("weather?", None, {"max_tokens": 100}), "claude-haiku-4-5"
        )
    sent = server.requests[0]
    assert str(sent.url) == "https://anthropic.test/v1/messages"
    assert (
        sent.headers["x-api-key"] == API_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    )
    assert "authorization" not in sent.headers
    assert server.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "weather?"}],
    }
    assert r.text == "Let me check." and r.id == "msg_1" and r.finish_reason == "tool_calls"
    assert r.tool_calls == [ToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"})]
    assert (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.total_tokens,
        r.usage.cached_tokens,
    ) == (15, 5, 20, 3)
    assert r.message.to_dict()["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("new_one", "new_one"),
        (None, None),
    ],
)
def test_stop_reasons(reason: str | None, finish: str | None) -> None:
    assert map_stop_reason(reason) == finish


@pytest.mark.parametrize("piece", [1, 13, 100_000])
async def test_stream_every_event(piece: int) -> None:
    reply, stream = stream_reply(split_every(STREAM, piece))
    server = Server(reply)
    async with server.client() as client:
        chunks = [
            c
            async for c in adapter().stream(
                client, build_request("hi", None, {}), "claude-haiku-4-5"
            )
        ]
    assert server.body["stream"] is True
    r = accumulate_chunks(chunks)
    assert r.text == "Hello" and r.id == "msg_s" and r.model == "claude-haiku-4-5"
    assert r.tool_calls == [ToolCall(id="toolu_9", name="get_weather", arguments={"city": "Paris"})]
    assert r.finish_reason == "tool_calls"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (20, 15, 35)
    assert stream.closed


async def test_stream_cut_and_idle() -> None:
    cut = STREAM[: STREAM.index(b"event: message_stop")]
    reply, stream = stream_reply([cut])
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderUnavailableError, match="end marker"):
            async for _ in adapter().stream(client, build_request("hi", None, {}), "m"):
                pass
    assert stream.closed
    reply, stream = stream_reply([STREAM[:200]], hang=True)
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderTimeoutError):
            async for _ in adapter().stream(
                client, build_request("hi", None, {}), "m", stream_idle_s=0.05
            ):
                pass
    assert stream.closed


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            sse(
                ev("error", error={"type": "overloaded_error", "message": "Overloaded"}),
                event_names=True,
            ),
            errors.ProviderUnavailableError,
        ),
        (
            sse(
                ev("error", error={"type": "rate_limit_error", "message": "slow"}), event_names=True
            ),
            errors.RateLimitError,
        ),
        (
            sse(
                ev(
                    "error",
                    error={"type": "invalid_request_error", "message": "prompt is too long"},
                ),
                event_names=True,
            ),
            errors.ContextLengthError,
        ),
        (
            sse(ev("error", error={"type": "api_error", "message": "boom"}), event_names=True),
            errors.ProviderUnavailableError,
        ),
        (b"event: message_start\ndata: {bad\n\n", errors.ProviderResponseError),
        (b"event: message_start\ndata: []\n\n", errors.ProviderResponseError),
        (sse(ev("message_start"), event_names=True), errors.ProviderResponseError),
        (
            sse(
                ev(
                    "content_block_delta",
                    index=5,
                    delta={"type": "input_json_delta", "partial_json": "{"},
                ),
                event_names=True,
            ),
            errors.ProviderResponseError,
        ),
    ],
)
async def test_stream_error_events(body: bytes, expected: type[errors.ProviderError]) -> None:
    start = sse(
        ev("message_start", message={"id": "m", "model": "x", "usage": {}}), event_names=True
    )
    reply, stream = stream_reply([start + body])
    async with Server(reply).client() as client:
        with pytest.raises(expected) as info:
            async for _ in adapter().stream(client, build_request("hi", None, {}), "m"):
                pass
    assert type(info.value) is expected and stream.closed


@pytest.mark.parametrize(("status", "body", "expected"), ERROR_CASES)
async def test_error_statuses(status: int, body: Any, expected: type[errors.ProviderError]) -> None:
    async with Server(error_reply(status, body)).client() as client:
        with pytest.raises(errors.ProviderError) as info:
            await adapter().chat(client, build_request("hi", None, {}), "m")
    check_error(info.value, status, expected)


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, content=b"{oops", headers={"content-type": "application/json"}),
        httpx.Response(200, content=b"hi", headers={"content-type": "text/plain"}),
        json_reply({"id": "x"}),
        json_reply({"content": [{"type": "tool_use", "id": "t", "name": "n", "input": [1]}]}),
        json_reply({"content": [{"type": "text"}]}),
    ],
)
async def test_malformed_replies(reply: httpx.Response) -> None:
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderResponseError):
            await adapter().chat(client, build_request("hi", None, {}), "m")


async def test_embeddings_refused_and_models_listed() -> None:
    server = Server(
        json_reply({"data": [{"id": "claude-haiku-4-5", "type": "model"}]}), json_reply([])
    )
    a = adapter()
    async with server.client() as client:
        with pytest.raises(errors.InvalidRequestError, match="no embeddings") as info:
            await a.embed(client, ["x"], "claude-haiku-4-5")
        assert info.value.field == "model"
        assert await a.list_models(client) == ["claude-haiku-4-5"]
        assert str(server.requests[0].url) == "https://anthropic.test/v1/models"
        assert server.requests[0].headers["x-api-key"] == API_KEY
        with pytest.raises(errors.ProviderResponseError):
            await a.list_models(client)


def test_repr_hides_key() -> None:
    assert API_KEY not in repr(adapter()) and "anthropic.test" in repr(adapter())
