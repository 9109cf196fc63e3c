"""The byte-level HTTP path: adapters speak bytes, the default transport builds no httpx
objects, every other transport gets the same bytes through one shim."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from llmrelay import (
    CacheConfig,
    LLMService,
    OrchestratorConfig,
    RequestTimeouts,
)
from llmrelay._transport import RustTransport
from llmrelay._types import ChatRequest, ChatResponse, Message, Usage, build_request
from llmrelay.errors import (
    DeadlineExceededError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    RateLimitError,
)
from llmrelay.providers import (
    AnthropicAdapter,
    OllamaAdapter,
    OpenAIAdapter,
    ProviderAdapter,
    parse_rate_limit_headers,
)
from service_helpers import ConfigFactory

JSON = [(b"content-type", b"application/json"), (b"x-request-id", b"req-7")]
MODELS = {"openai": "openai/gpt-4o-mini", "claude": "claude/claude-haiku-4-5"}
MODELS["local"] = "local/llama3.2"


@pytest.fixture
def httpx_objects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every httpx.Request and httpx.Response built while the test runs, by class name."""
    built: list[str] = []
    for cls in (httpx.Request, httpx.Response):
        original = cls.__init__

        def counting(self: Any, *a: Any, _o: Any = original, **kw: Any) -> None:
            built.append(type(self).__name__)
            _o(self, *a, **kw)

        monkeypatch.setattr(cls, "__init__", counting)
    yield built


@pytest.fixture
def submits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URL of every request handed to the core client by ``RustTransport.submit``."""
    seen: list[str] = []
    original = RustTransport.submit

    def spy(self: RustTransport, wire: Any, timeout_s: float | None) -> Any:
        seen.append(wire.url)
        return original(self, wire, timeout_s)

    monkeypatch.setattr(RustTransport, "submit", spy)
    return seen


# ---- the default path ------------------------------------------------------------------------


async def test_default_transport_builds_no_httpx_objects(
    make_config: ConfigFactory, httpx_objects: list[str], submits: list[str]
) -> None:
    """Chat on each kind and embeddings: one submit to the core per call, and not one
    httpx.Request or httpx.Response built."""
    async with LLMService(make_config(cache=CacheConfig(enabled=False))) as svc:
        for name, model in MODELS.items():
            r = await svc.achat(f"hello {name}", model=model)
            assert f"hello {name}" in r.text and r.usage.total_tokens > 0
        e = await svc.aembed(["one", "two"], "openai/text-embedding-3-small")
        assert len(e.embeddings) == 2
    assert httpx_objects == []
    assert len(submits) == 4
    assert submits[0].endswith("/chat/completions") and submits[3].endswith("/embeddings")


async def test_default_path_sends_the_same_headers_and_body_as_the_shim(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    """The bytes the core client sends and the ones the httpx shim sends carry the same
    method, path, JSON body and the adapter's headers."""
    config = make_config(cache=CacheConfig(enabled=False))
    for transport in (None, "httpx"):
        async with LLMService(config, transport=transport) as svc:
            await svc.achat("same bytes", model="claude/claude-haiku-4-5", temperature=0.5)
    core, shim = fakes["anthropic"].requests[-2:]
    assert (core.method, core.path, core.json) == (shim.method, shim.path, shim.json)
    for name in ("x-api-key", "anthropic-version", "content-type", "accept"):
        assert core.headers[name] == shim.headers[name], name
    assert core.json["temperature"] == 0.5 and core.headers["x-api-key"] == "sk-ant-test-key"


async def test_rate_limit_headers_are_read_from_raw_pairs_on_the_default_path(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].set_rate_limit_headers(limit_requests=100, remaining_requests=5)
    async with LLMService(make_config(cache=CacheConfig(enabled=False))) as svc:
        orch = svc._engine.orchestrator
        seen: list[Any] = []
        original = orch.observe_rate_headers

        def spy(dep: Any, info: Any) -> None:
            seen.append(info)
            original(dep, info)

        orch.observe_rate_headers = spy  # type: ignore[method-assign]
        await svc.achat("learn")
    assert [(i.requests_limit, i.requests_remaining) for i in seen] == [(100, 5)]


async def test_error_reply_on_the_default_path_is_typed(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].inject("rate_limit", retry_after=2.0)
    config = make_config(
        cache=CacheConfig(enabled=False), orchestrator=OrchestratorConfig(max_retries=0)
    )
    async with LLMService(config) as svc:
        with pytest.raises(RateLimitError) as info:
            await svc.achat("limited")
    assert info.value.retry_after == 2.0 and info.value.status_code == 429


async def test_clamped_read_on_the_default_path_is_the_callers_deadline(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].inject("hang")
    config = make_config(cache=CacheConfig(enabled=False), timeouts=RequestTimeouts(read_s=30.0))
    async with LLMService(config) as svc:
        with pytest.raises(DeadlineExceededError):
            await svc.achat("impatient", timeout=0.3)
        snap = svc.metrics.snapshot()
    assert snap.total("failures.DeadlineExceeded") == 1
    assert snap.total("failures.ProviderTimeoutError") == 0


async def test_unclamped_read_on_the_default_path_is_the_deployments_timeout(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].inject("hang")
    config = make_config(
        cache=CacheConfig(enabled=False),
        timeouts=RequestTimeouts(read_s=0.2),
        orchestrator=OrchestratorConfig(max_retries=0),
    )
    async with LLMService(config) as svc:
        with pytest.raises(ProviderTimeoutError, match="timed out: ReadTimeout"):
            await svc.achat("slow", timeout=30)


async def test_malformed_reply_on_the_default_path_is_a_response_error(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].inject("malformed_json")
    config = make_config(
        cache=CacheConfig(enabled=False), orchestrator=OrchestratorConfig(max_retries=0)
    )
    async with LLMService(config) as svc:
        with pytest.raises(ProviderResponseError, match="valid JSON"):
            await svc.achat("broken")


@pytest.fixture
async def chunked_server() -> AsyncIterator[str]:
    """A server answering every request with a chat completion in chunked encoding (the
    core reads such a body piece by piece, not whole)."""
    body = json.dumps(
        {
            "id": "c1",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"content": "chunked " * 40}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        }
    ).encode()

    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for i in range(0, len(body), 50):
                    part = body[i : i + 50]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1"
        # the client keeps its connection alive: close ours before the loop goes
        for w in writers:
            w.close()
        for w in writers:
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()


async def test_chunked_reply_on_the_default_path(chunked_server: str) -> None:
    from llmrelay import LLMServiceConfig, ProviderConfig

    config = LLMServiceConfig(
        providers=[ProviderConfig(name="p", kind="openai", base_url=chunked_server, api_key="k")],
        default_model="p/gpt-4o-mini",
        cache=CacheConfig(enabled=False),
    )
    async with LLMService(config) as svc:
        r = await svc.achat("hi")
    assert r.text == "chunked " * 40 and r.usage.total_tokens == 3


# ---- adapters speak bytes --------------------------------------------------------------------


def _adapters() -> list[ProviderAdapter]:
    kw = {"deployment": "d", "api_key": "sk-secret"}
    return [
        OpenAIAdapter(base_url="http://127.0.0.1:1/v1", **kw),
        AnthropicAdapter(base_url="http://127.0.0.1:1", **kw),
        OllamaAdapter(base_url="http://127.0.0.1:1", **kw),
    ]


@pytest.mark.parametrize("adapter", _adapters(), ids=lambda a: a.kind)
def test_wire_chat_is_bytes(adapter: ProviderAdapter) -> None:
    wire = adapter.wire_chat(build_request("hi", None, {"temperature": 0}), "m", stream=False)
    assert wire.method == "POST" and wire.url.startswith("http://127.0.0.1:1/")
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in wire.headers)
    assert (b"content-type", b"application/json") in wire.headers
    body = json.loads(wire.body)
    assert body["model"] == "m" and "hi" in json.dumps(body["messages"])


WRONG_SHAPES = {
    "openai": [
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 5}}]}',
        b'{"choices": [{"message": {}}], "usage": {"prompt_tokens": "3"}}',
        b'{"choices": [{"message": {"tool_calls": [{"id": "", "function": {"name": "f"}}]}}]}',
        b'{"choices": [{"message": {}, "finish_reason": ["stop"]}]}',
        b"[1, 2]",
    ],
    "anthropic": [
        b'{"content": "text"}',
        b'{"content": [{"type": "text"}]}',
        b'{"content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}',
        b'{"content": [], "stop_reason": 3}',
    ],
    "ollama": [
        b'{"message": {"content": ["x"]}}',
        b'{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}}',
        b'{"message": {}, "logprobs": [{"token": 1}]}',
        b"{}",
    ],
}


@pytest.mark.parametrize("adapter", _adapters(), ids=lambda a: a.kind)
def test_decode_chat_wrong_shapes_are_response_errors(adapter: ProviderAdapter) -> None:
    for body in WRONG_SHAPES[adapter.kind]:
        with pytest.raises(ProviderResponseError) as info:
            adapter.decode_chat(200, JSON, body, "m")
        assert info.value.status_code == 200 and info.value.request_id == "req-7", body
    with pytest.raises(ProviderResponseError, match="content-type"):
        adapter.decode_chat(200, [(b"content-type", b"text/html")], b"{}", "m")
    with pytest.raises(ProviderResponseError, match="valid JSON"):
        adapter.decode_chat(200, JSON, b'{"choices": [', "m")


def test_base64_embedding_with_nan_is_a_response_error() -> None:
    """A float list cannot hold NaN in JSON; a base64 one must not smuggle it in."""
    adapter = _adapters()[0]
    ok = base64.b64encode(struct.pack("<2f", 0.5, 1.0)).decode()
    good = adapter.decode_embed(200, JSON, json.dumps({"data": [{"embedding": ok}]}).encode(), "m")
    assert good.embeddings == [[0.5, 1.0]]
    for bad in (float("nan"), float("inf")):
        packed = base64.b64encode(struct.pack("<2f", bad, 1.0)).decode()
        body = json.dumps({"data": [{"embedding": packed}]}).encode()
        with pytest.raises(ProviderResponseError, match="embedding"):
            adapter.decode_embed(200, JSON, body, "m")


def test_ollama_error_in_a_2xx_reply_is_typed() -> None:
    """Ollama sends some failures as ``{"error": ...}``, whatever else the reply holds."""
    adapter = _adapters()[2]
    for body in (b'{"error": "model not found"}', b'{"error": "model not found", "message": 1}'):
        with pytest.raises(ProviderError, match="model not found") as info:
            adapter.decode_chat(200, JSON, body, "m")
        assert type(info.value) is ProviderError and info.value.request_id == "req-7"


def test_error_from_reply_reads_raw_header_pairs() -> None:
    adapter = _adapters()[0]
    headers = [(b"retry-after", b"2"), (b"x-request-id", b"req-9")]
    body = b'{"error": {"message": "slow down sk-secret", "type": "rate_limit"}}'
    err = adapter.error_from_reply(429, headers, body, "m")
    assert isinstance(err, RateLimitError)
    assert (err.retry_after, err.request_id, err.status_code) == (2.0, "req-9", 429)
    assert "sk-secret" not in str(err)


def test_rate_limit_headers_from_raw_pairs() -> None:
    pairs = [
        (b"x-ratelimit-limit-requests", b"100"),
        (b"X-RateLimit-Remaining-Requests", b"7"),
        (b"x-ratelimit-reset-requests", b"6m0s"),
        (b"content-type", b"application/json"),
    ]
    info = parse_rate_limit_headers(pairs)
    assert (info.requests_limit, info.requests_remaining, info.requests_reset_s) == (100, 7, 360)
    assert parse_rate_limit_headers([(b"content-type", b"text/plain")]) == type(info)()
    assert parse_rate_limit_headers([("retry-after", 3)]) == type(info)()  # type: ignore[list-item]


# ---- adapters written against httpx objects keep working ------------------------------------


class _HttpxStyle(ProviderAdapter):
    """A plug-in adapter written the older way: httpx.Request in, httpx.Response out."""

    kind = "httpx-style"

    def build_chat_request(self, req: ChatRequest, model: str, *, stream: bool) -> httpx.Request:
        return httpx.Request("POST", f"{self.base_url}/chat", json={"q": req.messages[-1].text})

    def parse_chat_response(self, resp: httpx.Response, model: str) -> ChatResponse:
        text = resp.json()["a"]
        return ChatResponse(
            id="x",
            model=model,
            provider=self.deployment,
            text=text,
            message=Message(role="assistant", content=text),
            tool_calls=[],
            finish_reason="stop",
            usage=Usage(),
        )


def test_httpx_style_adapter_speaks_bytes_through_the_base() -> None:
    adapter = _HttpxStyle(deployment="d", base_url="http://127.0.0.1:1")
    wire = adapter.wire_chat(build_request("ping", None, {}), "m", stream=False)
    assert wire.url == "http://127.0.0.1:1/chat" and json.loads(wire.body) == {"q": "ping"}
    r = adapter.decode_chat(200, JSON, b'{"a": "pong"}', "m")
    assert r.text == "pong"


def test_adapter_with_neither_side_says_so() -> None:
    adapter = ProviderAdapter(deployment="d", base_url="http://127.0.0.1:1")
    with pytest.raises(NotImplementedError, match="wire_chat"):
        adapter.wire_chat(build_request("ping", None, {}), "m", stream=False)
    with pytest.raises(NotImplementedError, match="decode_chat"):
        adapter.decode_chat(200, JSON, b"{}", "m")
