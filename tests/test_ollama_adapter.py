"""The Ollama adapter against httpx.MockTransport: options, tools, NDJSON streams, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmrelay import errors
from llmrelay._types import build_request
from llmrelay.providers import OllamaAdapter, accumulate_chunks
from provider_mocks import (
    ERROR_CASES,
    Server,
    check_error,
    error_reply,
    json_reply,
    ndjson,
    split_every,
    stream_reply,
)

NDJSON = "application/x-ndjson"
REPLY = {
    "model": "llama3.2",
    "created_at": "2025-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "Hi there"},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 12,
    "eval_count": 3,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def adapter(key: str | None = None) -> OllamaAdapter:
    return OllamaAdapter(deployment="dep", base_url="http://127.0.0.1:11434/", api_key=key)


def line(content: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "message": {"role": "assistant", "content": content},
        "done": False,
        **extra,
    }


STREAM = ndjson(
    line("Hel"),
    line("lo"),
    line(
        "",
        message={
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
    ),
    {
        "model": "llama3.2",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 7,
        "eval_count": 9,
    },
)


async def test_chat_request_options_and_response() -> None:
    server = Server(json_reply(REPLY, headers={"content-type": "application/json; charset=utf-8"}))
    req = build_request(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}],
        None,
        {
            "temperature": 0.3,
            "max_tokens": 50,
            "top_p": 0.8,
            "stop": ["x"],
            "seed": 3,
            "response_format": {"type": "json_object"},
            "extra": {"num_ctx": 8192, "keep_alive": "5m", "think": False},
        },
    )
    async with server.client() as client:
        r = await adapter().chat(client, req, "llama3.2")
    assert str(server.requests[0].url) == "http://127.0.0.1:11434/api/chat"
    assert "authorization" not in server.requests[0].headers
    assert server.body == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}],
        "stream": False,
        "format": "json",
        "keep_alive": "5m",
        "think": False,
        "options": {
            "temperature": 0.3,
            "top_p": 0.8,
            "num_predict": 50,
            "stop": ["x"],
            "seed": 3,
            "num_ctx": 8192,
        },
    }
    assert r.text == "Hi there" and r.finish_reason == "stop" and r.provider == "dep"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (12, 3, 15)
    assert r.id.startswith("ollama-")


async def test_tools_images_and_schema_format() -> None:
    reply = {
        **REPLY,
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "noop", "arguments": "{}"}},
            ],
        },
    }
    server = Server(json_reply(reply))
    history = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what"},
                {"type": "image_url", "image_url": "data:image/png;base64,QUJD"},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
    ]
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    async with server.client() as client:
        r = await adapter("k").chat(
            client,
            build_request(
                history,
                None,
                {"tools": TOOLS, "response_format": schema, "extra": {"options": {"num_gpu": 1}}},
            ),
            "llama3.2",
        )
    body = server.body
    assert server.requests[0].headers["authorization"] == "Bearer k"
    assert (
        body["tools"] == TOOLS
        and body["format"] == {"type": "object"}
        and body["options"] == {"num_gpu": 1}
    )
    assert body["messages"] == [
        {"role": "user", "content": "what", "images": ["QUJD"]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    assert [(c.name, c.arguments) for c in r.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("noop", {}),
    ]
    assert r.finish_reason == "tool_calls" and r.message.content is None
    assert r.tool_calls[0].id != r.tool_calls[1].id
    none = adapter().chat_body(
        build_request("x", None, {"tools": TOOLS, "tool_choice": "none"}), "m", stream=False
    )
    assert "tools" not in none


def test_url_images_are_refused() -> None:
    req = build_request(
        [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/a.png"}]}],
        None,
        {},
    )
    with pytest.raises(errors.InvalidRequestError) as info:
        adapter().chat_body(req, "llava", stream=False)
    assert info.value.field == "messages[0].content[0].image_url"


async def test_length_finish() -> None:
    async with Server(json_reply({**REPLY, "done_reason": "length"})).client() as client:
        r = await adapter().chat(client, build_request("x", None, {}), "llama3.2")
    assert r.finish_reason == "length"


@pytest.mark.parametrize("piece", [1, 9, 100_000])
async def test_stream(piece: int) -> None:
    reply, stream = stream_reply(split_every(STREAM, piece), NDJSON)
    server = Server(reply)
    async with server.client() as client:
        chunks = [
            c async for c in adapter().stream(client, build_request("hi", None, {}), "llama3.2")
        ]
    assert server.body["stream"] is True
    r = accumulate_chunks(chunks)
    assert r.text == "Hello" and r.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in r.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (7, 9, 16)
    assert stream.closed


async def test_stream_last_line_without_newline() -> None:
    reply, _ = stream_reply([STREAM.rstrip(b"\n")], NDJSON)
    async with Server(reply).client() as client:
        chunks = [c async for c in adapter().stream(client, build_request("hi", None, {}), "m")]
    assert chunks[-1].finish_reason is not None


async def test_stream_cut_idle_and_errors() -> None:
    reply, stream = stream_reply([ndjson(line("a"))], NDJSON)
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderUnavailableError, match="end marker"):
            async for _ in adapter().stream(client, build_request("hi", None, {}), "m"):
                pass
    assert stream.closed
    reply, stream = stream_reply([ndjson(line("a"))], NDJSON, hang=True)
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderTimeoutError):
            async for _ in adapter().stream(
                client, build_request("hi", None, {}), "m", stream_idle_s=0.05
            ):
                pass
    assert stream.closed
    cases: list[tuple[bytes, type[errors.ProviderError]]] = [
        (
            ndjson({"error": "an error was encountered while running the model"}),
            errors.ProviderUnavailableError,
        ),
        (ndjson({"error": "input length exceeds the context length"}), errors.ContextLengthError),
        (b"{nope\n", errors.ProviderResponseError),
        (b"[1]\n", errors.ProviderResponseError),
        (ndjson({"message": "x", "done": False}), errors.ProviderResponseError),
    ]
    for body, expected in cases:
        reply, stream = stream_reply([body], NDJSON)
        async with Server(reply).client() as client:
            with pytest.raises(expected):
                async for _ in adapter().stream(client, build_request("hi", None, {}), "m"):
                    pass
        assert stream.closed
    reply, stream = stream_reply([b"data: x\n\n"], "text/event-stream")
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderResponseError, match="content-type"):
            async for _ in adapter().stream(client, build_request("hi", None, {}), "m"):
                pass


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
        json_reply({"done": True}),
        json_reply({"message": {"content": 3}}),
        json_reply(
            {
                "message": {
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
                }
            }
        ),
        json_reply(
            {
                "message": {
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                }
            }
        ),
    ],
)
async def test_malformed_replies(reply: httpx.Response) -> None:
    async with Server(reply).client() as client:
        with pytest.raises(errors.ProviderResponseError):
            await adapter().chat(client, build_request("hi", None, {}), "m")


async def test_error_in_a_200_body() -> None:
    async with Server(
        json_reply({"error": "model requires more system memory"})
    ).client() as client:
        with pytest.raises(errors.ProviderError, match="system memory"):
            await adapter().chat(client, build_request("hi", None, {}), "m")


async def test_embed_and_tags() -> None:
    server = Server(
        json_reply(
            {"model": "nomic-embed-text", "embeddings": [[0.1, 2], [3, 4]], "prompt_eval_count": 6}
        ),
        json_reply(
            {
                "models": [
                    {"name": "llama3.2:latest", "model": "llama3.2:latest"},
                    {"model": "qwen2.5:7b"},
                ]
            }
        ),
        json_reply({"embeddings": "x"}),
    )
    a = adapter()
    async with server.client() as client:
        e = await a.embed(client, ["a", "b"], "nomic-embed-text", keep_alive="1m")
        assert server.body == {"model": "nomic-embed-text", "input": ["a", "b"], "keep_alive": "1m"}
        assert str(server.requests[0].url) == "http://127.0.0.1:11434/api/embed"
        assert e.embeddings == [[0.1, 2.0], [3.0, 4.0]] and e.usage.prompt_tokens == 6
        assert await a.list_models(client) == ["llama3.2:latest", "qwen2.5:7b"]
        assert str(server.requests[1].url) == "http://127.0.0.1:11434/api/tags"
        with pytest.raises(errors.ProviderResponseError):
            await a.embed(client, ["a"], "m")
        with pytest.raises(errors.ProviderResponseError):
            await a.list_models(client)
