"""The fakes speak the real wire protocols: payloads validate against the official SDK types,
and the official clients (openai, anthropic, ollama) work against them unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import msgspec
import ollama
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from llmrelay.testing import FakeProvider

OPENAI_HEADERS = {"authorization": "Bearer test"}
ANTHROPIC_HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "Hello there fake"},
]
TOOL = {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}
anthropic_event = TypeAdapter(RawMessageStreamEvent)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event in ``text``."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


# ---- OpenAI ----------------------------------------------------------------------------------


async def test_openai_chat_validates(fake_openai: FakeProvider, client: httpx.AsyncClient) -> None:
    r = await client.post(
        f"{fake_openai.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers=OPENAI_HEADERS,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req_")
    c = ChatCompletion.model_validate(r.json())
    assert c.choices[0].message.content == "echo: Hello there fake"
    assert c.choices[0].finish_reason == "stop" and c.model == "gpt-4o-mini"
    assert c.usage is not None and c.usage.completion_tokens == 6
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens


async def test_openai_stream_validates(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script("one two three")
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await client.post(
        f"{fake_openai.base_url}/chat/completions", json=body, headers=OPENAI_HEADERS
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate_json(d) for _, d in events[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_without_usage_has_no_usage_chunk(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    r = await client.post(
        f"{fake_openai.base_url}/chat/completions", json=body, headers=OPENAI_HEADERS
    )
    chunks = [msgspec.json.decode(d) for _, d in sse_events(r.text)[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)


async def test_openai_tool_calls_validate(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script(tool_calls=[TOOL], times=2)
    url = f"{fake_openai.base_url}/chat/completions"
    r = await client.post(url, json={"model": "m", "messages": MESSAGES}, headers=OPENAI_HEADERS)
    msg = ChatCompletion.model_validate(r.json()).choices[0]
    assert msg.finish_reason == "tool_calls" and msg.message.content is None
    call = msg.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.function.name == "get_weather"
    assert msgspec.json.decode(call.function.arguments) == TOOL["arguments"]
    r = await client.post(
        url, json={"model": "m", "messages": MESSAGES, "stream": True}, headers=OPENAI_HEADERS
    )
    chunks = [ChatCompletionChunk.model_validate_json(d) for _, d in sse_events(r.text)[:-1]]
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function is not None
    )
    assert msgspec.json.decode(args) == TOOL["arguments"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_openai_embeddings_and_models(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        f"{fake_openai.base_url}/embeddings",
        json={"model": "e", "input": ["a", "b"], "dimensions": 4},
        headers=OPENAI_HEADERS,
    )
    e = CreateEmbeddingResponse.model_validate(r.json())
    assert [len(d.embedding) for d in e.data] == [4, 4] and e.data[1].index == 1
    assert e.data[0].embedding != e.data[1].embedding
    r = await client.get(f"{fake_openai.base_url}/models", headers=OPENAI_HEADERS)
    assert [Model.model_validate(m).id for m in r.json()["data"]] == ["gpt-4o-mini"]


async def test_openai_max_tokens_truncates_with_length(
    fake_openai: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_openai.script("a " * 100)
    r = await client.post(
        f"{fake_openai.base_url}/chat/completions",
        json={"model": "m", "messages": MESSAGES, "max_completion_tokens": 5},
        headers=OPENAI_HEADERS,
    )
    c = ChatCompletion.model_validate(r.json())
    assert c.choices[0].finish_reason == "length" and c.usage is not None
    assert c.usage.completion_tokens == 5


async def test_official_openai_client(fake_openai: FakeProvider) -> None:
    fake_openai.script(tool_calls=[TOOL])
    async with openai.AsyncOpenAI(
        base_url=fake_openai.base_url,
        api_key="test",
        max_retries=0,
        _strict_response_validation=True,
    ) as c:
        r = await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert r.choices[0].message.tool_calls is not None
        r = await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert r.choices[0].message.content == "echo: Hello there fake"
        stream = await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
        assert "".join(parts) == "echo: Hello there fake"
    # the SDK asks for base64 embeddings and decodes them itself (not in strict mode)
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test") as c:
        e = await c.embeddings.create(model="text-embedding-3-small", input="hi")
        assert len(e.data[0].embedding) == fake_openai.embedding_dims
    assert fake_openai.requests[-1].json["encoding_format"] == "base64"  # type: ignore[index]


# ---- Anthropic -------------------------------------------------------------------------------


def _anthropic_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 100, "system": "be brief",
            "messages": MESSAGES[1:], **extra}  # fmt: skip


async def test_anthropic_message_validates(
    fake_anthropic: FakeProvider, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        f"{fake_anthropic.url}/v1/messages", json=_anthropic_body(), headers=ANTHROPIC_HEADERS
    )
    m = Message.model_validate(r.json())
    assert r.headers["request-id"].startswith("req_")
    assert m.content[0].type == "text" and m.content[0].text == "echo: Hello there fake"
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 6


async def test_anthropic_stream_event_sequence(
    fake_anthropic: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_anthropic.script("thinking aloud", tool_calls=[TOOL])
    r = await client.post(
        f"{fake_anthropic.url}/v1/messages",
        json=_anthropic_body(stream=True),
        headers=ANTHROPIC_HEADERS,
    )
    events = sse_events(r.text)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    parsed = []
    for name, data in events:
        if name == "ping":
            assert msgspec.json.decode(data) == {"type": "ping"}
            continue
        event = anthropic_event.validate_json(data)
        assert event.type == name
        parsed.append(event)
    text = "".join(e.delta.text for e in parsed if e.type == "content_block_delta"
                   and e.delta.type == "text_delta")  # fmt: skip
    partial = "".join(e.delta.partial_json for e in parsed if e.type == "content_block_delta"
                      and e.delta.type == "input_json_delta")  # fmt: skip
    assert text == "thinking aloud" and msgspec.json.decode(partial) == TOOL["arguments"]
    blocks = [e.content_block.type for e in parsed if e.type == "content_block_start"]
    assert blocks == ["text", "tool_use"]
    delta = next(e for e in parsed if e.type == "message_delta")
    assert delta.delta.stop_reason == "tool_use" and delta.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("drop", "status", "kind", "message"),
    [
        ("x-api-key", 401, "authentication_error", "x-api-key header is required"),
        (
            "anthropic-version",
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ),
    ],
)
async def test_anthropic_requires_headers(
    fake_anthropic: FakeProvider,
    client: httpx.AsyncClient,
    drop: str,
    status: int,
    kind: str,
    message: str,
) -> None:
    headers = {k: v for k, v in ANTHROPIC_HEADERS.items() if k != drop}
    r = await client.post(
        f"{fake_anthropic.url}/v1/messages", json=_anthropic_body(), headers=headers
    )
    assert r.status_code == status
    body = r.json()
    assert body["type"] == "error" and body["error"] == {"type": kind, "message": message}


async def test_anthropic_requires_max_tokens(
    fake_anthropic: FakeProvider, client: httpx.AsyncClient
) -> None:
    body = _anthropic_body()
    del body["max_tokens"]
    r = await client.post(f"{fake_anthropic.url}/v1/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert r.status_code == 400
    assert r.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


async def test_official_anthropic_client(fake_anthropic: FakeProvider) -> None:
    fake_anthropic.script(tool_calls=[TOOL])
    async with anthropic.AsyncAnthropic(
        base_url=fake_anthropic.base_url,
        api_key="test",
        max_retries=0,
        _strict_response_validation=True,
    ) as c:
        m = await c.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        assert m.stop_reason == "tool_use" and m.content[0].type == "tool_use"
        assert m.content[0].input == TOOL["arguments"]
        async with c.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi you"}],
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "echo: hi you" and final.stop_reason == "end_turn"
        assert (await c.messages.count_tokens(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}]
        )).input_tokens > 0  # fmt: skip
        models = await c.models.list()
        assert [m.id for m in models.data] == ["claude-haiku-4-5"]


# ---- Ollama ----------------------------------------------------------------------------------


async def test_ollama_chat_and_stream_validate(
    fake_ollama: FakeProvider, client: httpx.AsyncClient
) -> None:
    url = f"{fake_ollama.url}/api/chat"
    r = await client.post(url, json={"model": "llama3.2", "messages": MESSAGES, "stream": False})
    resp = ollama.ChatResponse.model_validate(r.json())
    assert resp.message.content == "echo: Hello there fake" and resp.done
    assert resp.done_reason == "stop" and resp.eval_count == 6 and resp.prompt_eval_count
    r = await client.post(url, json={"model": "llama3.2", "messages": MESSAGES})  # streams
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [ollama.ChatResponse.model_validate_json(x) for x in r.text.splitlines()]
    assert "".join(x.message.content or "" for x in lines) == "echo: Hello there fake"
    assert [x.done for x in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1].eval_count == 6


async def test_ollama_tool_calls_embed_tags(
    fake_ollama: FakeProvider, client: httpx.AsyncClient
) -> None:
    fake_ollama.script(tool_calls=[TOOL])
    r = await client.post(
        f"{fake_ollama.url}/api/chat", json={"model": "m", "messages": MESSAGES, "stream": False}
    )
    calls = ollama.ChatResponse.model_validate(r.json()).message.tool_calls
    assert calls is not None and calls[0].function.arguments == TOOL["arguments"]
    r = await client.post(f"{fake_ollama.url}/api/embed", json={"model": "m", "input": ["a"]})
    assert len(ollama.EmbedResponse.model_validate(r.json()).embeddings[0]) == 8
    r = await client.get(f"{fake_ollama.url}/api/tags")
    assert ollama.ListResponse.model_validate(r.json()).models[0].model == "llama3.2:latest"


async def test_official_ollama_client(fake_ollama: FakeProvider) -> None:
    c = ollama.AsyncClient(host=fake_ollama.url)
    try:
        r = await c.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
        assert r.message.content == "echo: hi"
        fake_ollama.script(tool_calls=[TOOL])
        parts = [p async for p in await c.chat(model="llama3.2", messages=MESSAGES, stream=True)]
        assert parts[0].message.tool_calls is not None and parts[-1].done
        e = await c.embed(model="llama3.2", input="hi")
        assert len(e.embeddings) == 1
        assert (await c.list()).models[0].model == "llama3.2:latest"
    finally:
        await c._client.aclose()
