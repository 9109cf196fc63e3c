"""The OpenAI adapter against httpx.MockTransport: chat, streams, tools, errors, embeddings."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from llmrelay import ToolCall, errors
from llmrelay._types import build_request
from llmrelay.providers import OpenAIAdapter, accumulate_chunks
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

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def adapter() -> OpenAIAdapter:
    return OpenAIAdapter(
        deployment="dep", base_url="https://api.test/v1/", api_key=API_KEY, headers={"x-team": "a"}
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({}, "tool_calls"),
    {
        "id": "c1",
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    },
    "[DONE]",
)


async def test_chat_request_and_response() -> None:
    server = Server(json_reply(COMPLETION))
    req = build_request(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}],
        None,
        {
            "temperature": 0.2,
            "max_tokens": 10,
            "stop": ["x"],
            "seed": 1,
            "user": "u",
            "top_p": 0.9,
            "response_format": {"type": "json_object"},
            "metadata": {"k": "v"},
            "extra": {"logprobs": True},
        },
    )
    async with server.client() as client:
        r = await adapter().chat(client, req, "gpt-4o-mini", timeout=httpx.Timeout(3.0))
    sent = server.requests[0]
    assert str(sent.url) == "https://api.test/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}" and sent.headers["x-team"] == "a"
    assert sent.extensions["timeout"]["read"] == 3.0
    assert server.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "max_tokens": 10,
        "top_p": 0.9,
        "stop": ["x"],
        "seed": 1,
        "response_format": {"type": "json_object"},
        "user": "u",
        "logprobs": True,
    }
    assert r.text == "Hi!" and r.id == "chatcmpl-1" and r.provider == "dep"
    assert r.model == "gpt-4o-mini-2024-07-18" and r.finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (9, 2, 11)
    assert r.usage.cached_tokens == 4 and r.message.to_dict() == {
        "role": "assistant",
        "content": "Hi!",
    }


async def test_client_default_timeout_applies_and_reasoning_models_use_max_completion_tokens() -> (
    None
):
    server = Server(json_reply(COMPLETION))
    async with httpx.AsyncClient(transport=httpx.MockTransport(server), timeout=9.0) as client:
        await adapter().chat(client, build_request("x", None, {"max_tokens": 5}), "o3-mini")
    assert server.requests[0].extensions["timeout"]["connect"] == 9.0
    assert server.body["max_completion_tokens"] == 5 and "max_tokens" not in server.body


async def test_tool_calls_round_trip() -> None:
    reply = {
        **COMPLETION,
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    server = Server(json_reply(reply))
    req = build_request("weather?", None, {"tools": TOOLS, "tool_choice": "auto"})
    async with server.client() as client:
        r = await adapter().chat(client, req, "gpt-4o")
    assert server.body["tools"] == TOOLS and server.body["tool_choice"] == "auto"
    assert r.tool_calls == [ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})]
    assert r.finish_reason == "tool_calls" and r.text == ""
    history = [
        {"role": "user", "content": "weather?"},
        r.message.to_dict(),
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    body = adapter().chat_body(build_request(history, None, {}), "gpt-4o", stream=False)
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert body["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}


@pytest.mark.parametrize("piece", [1, 7, 10_000])
async def test_stream_text_tools_usage(piece: int) -> None:
    reply, stream = stream_reply(split_every(STREAM, piece))
    server = Server(reply)
    async with server.client() as client:
        chunks = [
            c async for c in adapter().stream(client, build_request("hi", None, {}), "gpt-4o")
        ]
    assert server.body["stream"] is True and server.body["stream_options"] == {
        "include_usage": True
    }
    assert server.requests[0].headers["accept"] == "text/event-stream"
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    r = accumulate_chunks(chunks)
    assert r.tool_calls == [ToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"})]
    assert r.finish_reason == "tool_calls" and r.provider == "dep" and r.id == "c1"
    assert stream.closed


async def test_stream_cut_before_done_raises() -> None:
    body = sse(chunk({"content": "Hel"}))
    reply, stream = stream_reply([body])
    async with Server(reply).client() as client:
        got: list[str] = []
        with pytest.raises(errors.ProviderUnavailableError, match="end marker"):
            async for c in adapter().stream(client, build_request("hi", None, {}), "gpt-4o"):
                got.append(c.text)
    assert got == ["Hel"] and stream.closed


async def test_stream_idle_times_out() -> None:
    reply, stream = stream_reply([sse(chunk({"content": "a"}))], hang=True)
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderTimeoutError, match="no stream data"):
            async for _ in adapter().stream(
                client, build_request("hi", None, {}), "gpt-4o", stream_idle_s=0.05
            ):
                pass
    assert stream.closed


async def test_stream_closed_when_consumer_stops_or_is_cancelled() -> None:
    reply, stream = stream_reply([STREAM])
    async with Server(reply).client() as client:
        agen = adapter().stream(client, build_request("hi", None, {}), "gpt-4o")
        first = await anext(agen)
        assert first.text == "Hel"
        await agen.aclose()
    assert stream.closed

    reply, stream = stream_reply([sse(chunk({"content": "a"}))], hang=True)
    async with Server(reply).client() as client:

        async def consume() -> None:
            async for _ in adapter().stream(client, build_request("hi", None, {}), "gpt-4o"):
                pass

        task = asyncio.create_task(consume())
        for _ in range(50):  # bounded: let the task reach the hanging read
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert stream.closed


async def test_stream_error_event_and_bad_events() -> None:
    cases: list[tuple[bytes, type[errors.ProviderError]]] = [
        (
            sse({"error": {"message": "server had an error", "type": "server_error"}}),
            errors.ProviderUnavailableError,
        ),
        (
            sse({"error": {"message": "limit", "type": "rate_limit_exceeded"}}),
            errors.RateLimitError,
        ),
        (b"data: {not json\n\n", errors.ProviderResponseError),
        (b"data: [1]\n\n", errors.ProviderResponseError),
        (sse({"choices": [{"delta": "x"}]}), errors.ProviderResponseError),
    ]
    for body, expected in cases:
        reply, stream = stream_reply([body])
        async with Server(reply).client() as client:
            with pytest.raises(expected):
                async for _ in adapter().stream(client, build_request("hi", None, {}), "gpt-4o"):
                    pass
        assert stream.closed


async def test_stream_wrong_content_type() -> None:
    reply, stream = stream_reply([b"{}"], content_type="application/json")
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderResponseError, match="content-type"):
            async for _ in adapter().stream(client, build_request("hi", None, {}), "gpt-4o"):
                pass
    assert stream.closed


@pytest.mark.parametrize(("status", "body", "expected"), ERROR_CASES)
async def test_error_statuses(status: int, body: Any, expected: type[errors.ProviderError]) -> None:
    for streamed in (False, True):
        async with Server(error_reply(status, body)).client() as client:
            with pytest.raises(errors.ProviderError) as info:
                if streamed:
                    async for _ in adapter().stream(
                        client, build_request("hi", None, {}), "gpt-4o"
                    ):
                        pass
                else:
                    await adapter().chat(client, build_request("hi", None, {}), "gpt-4o")
        check_error(info.value, status, expected)
        assert info.value.model == "gpt-4o"


async def test_insufficient_quota_is_not_retryable() -> None:
    body = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    async with Server(error_reply(429, body)).client() as client:
        with pytest.raises(errors.RateLimitError) as info:
            await adapter().chat(client, build_request("hi", None, {}), "gpt-4o")
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (
            httpx.Response(200, content=b"{oops", headers={"content-type": "application/json"}),
            "valid JSON",
        ),
        (
            httpx.Response(200, content=b"<html/>", headers={"content-type": "text/html"}),
            "content-type",
        ),
        (json_reply({"id": "x"}), "chat completion"),
        (json_reply({"choices": []}), "chat completion"),
        (json_reply({"choices": [{"message": {"content": 5}}]}), "chat completion"),
        (
            json_reply({"choices": [{"message": {"content": None, "tool_calls": [{"id": 1}]}}]}),
            "chat completion",
        ),
    ],
)
async def test_malformed_replies(reply: httpx.Response, match: str) -> None:
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderResponseError, match=match) as info:
            await adapter().chat(client, build_request("hi", None, {}), "gpt-4o")
    assert info.value.status_code == 200


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), errors.ProviderUnavailableError),
        (httpx.ReadError("reset by peer"), errors.ProviderUnavailableError),
        (httpx.RemoteProtocolError("peer closed"), errors.ProviderUnavailableError),
        (httpx.ConnectTimeout("slow"), errors.ProviderTimeoutError),
        (httpx.ReadTimeout("slow"), errors.ProviderTimeoutError),
        (httpx.PoolTimeout("busy"), errors.ProviderTimeoutError),
    ],
)
async def test_transport_errors(exc: Exception, expected: type[errors.ProviderError]) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise exc

    async with Server(boom).client() as client:
        with pytest.raises(expected) as info:
            await adapter().chat(client, build_request("hi", None, {}), "gpt-4o")
        assert info.value.provider == "dep"
        with pytest.raises(expected):
            async for _ in adapter().stream(client, build_request("hi", None, {}), "gpt-4o"):
                pass


async def test_read_error_mid_stream() -> None:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield sse(chunk({"content": "a"}))
            raise httpx.ReadError("connection reset")

    reply = httpx.Response(200, stream=Broken(), headers={"content-type": "text/event-stream"})
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderUnavailableError, match="ReadError"):
            async for _ in adapter().stream(client, build_request("hi", None, {}), "gpt-4o"):
                pass


async def test_embeddings_and_models() -> None:
    server = Server(
        json_reply(
            {
                "data": [
                    {"index": 1, "embedding": [0.5, 1]},
                    {"index": 0, "embedding": [0.1, 0.2]},
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        ),
        json_reply({"data": [{"id": "gpt-4o"}, {"id": "text-embedding-3-small"}]}),
        json_reply({"nope": 1}),
    )
    a = adapter()
    async with server.client() as client:
        e = await a.embed(client, ["a", "b"], "text-embedding-3-small", dimensions=2)
        assert server.body == {
            "model": "text-embedding-3-small",
            "input": ["a", "b"],
            "dimensions": 2,
        }
        assert str(server.requests[0].url) == "https://api.test/v1/embeddings"
        assert e.embeddings == [[0.1, 0.2], [0.5, 1.0]] and e.usage.prompt_tokens == 4
        assert e.provider == "dep"
        assert await a.list_models(client) == ["gpt-4o", "text-embedding-3-small"]
        assert str(server.requests[1].url) == "https://api.test/v1/models"
        with pytest.raises(errors.ProviderResponseError):
            await a.embed(client, ["a"], "m")
        with pytest.raises(errors.ProviderResponseError):
            await a.list_models(client)


def test_repr_hides_key_and_no_key_no_auth_header() -> None:
    a = adapter()
    assert API_KEY not in repr(a) and API_KEY not in str(a) and "***" in repr(a)
    req = OpenAIAdapter(deployment="local", base_url="http://127.0.0.1:8000/v1").build_chat_request(
        build_request("hi", None, {}), "m", stream=False
    )
    assert "authorization" not in req.headers


def test_rate_limit_info_from_headers() -> None:
    info = adapter().rate_limit_info(httpx.Headers({"x-ratelimit-remaining-requests": "3"}))
    assert info.requests_remaining == 3


async def test_wording_classifies_only_where_the_status_does_not() -> None:
    body = {
        "error": {
            "message": "no permission to use rate_limit tools",
            "type": "invalid_request_error",
        }
    }
    async with Server(error_reply(400, body)).client() as client:
        with pytest.raises(errors.ProviderError) as info:
            await adapter().chat(client, build_request("hi", None, {}), "gpt-4o")
    assert type(info.value) is errors.ProviderError
    assert str(info.value) == (
        "no permission to use rate_limit tools "
        "(provider=dep, model=gpt-4o, status=400, request_id=req_123)"
    )
