"""The streamed byte-level path: SSE / NDJSON framed in the core and handed over as
batches of whole events, no httpx object on the default transport, the same framing
through the httpx shim for every other transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from llmrelay import (
    CacheConfig,
    LLMService,
    LLMServiceConfig,
    ProviderConfig,
    RequestTimeouts,
    _core,
)
from llmrelay._transport import RustTransport
from llmrelay.errors import (
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from llmrelay.providers._sse import NDJSONDecoder, SSEDecoder
from service_helpers import ConfigFactory

MODELS = {
    "openai/gpt-4o-mini": "sse",
    "claude/claude-haiku-4-5": "sse",
    "local/llama3.2": "ndjson",
}


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
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The framing of every stream opened on the core client."""
    seen: list[str] = []
    original = RustTransport.open_stream

    async def spy(self: RustTransport, wire: Any, t: Any, idle: Any, framing: str) -> Any:
        seen.append(framing)
        return await original(self, wire, t, idle, framing)

    monkeypatch.setattr(RustTransport, "open_stream", spy)
    return seen


async def _texts(svc: LLMService, model: str, prompt: str = "hello stream") -> list[str]:
    return [c.text async for c in svc.astream(prompt, model=model) if c.text]


async def test_default_stream_path_builds_no_httpx_objects(
    make_config: ConfigFactory, httpx_objects: list[str], opened: list[str]
) -> None:
    async with LLMService(make_config(cache=CacheConfig(enabled=False))) as svc:
        for model in MODELS:
            texts = await _texts(svc, model)
            assert "".join(texts).strip(), model
    assert httpx_objects == []
    assert opened == list(MODELS.values())


async def test_core_and_shim_give_the_same_chunks(make_config: ConfigFactory) -> None:
    config = make_config(cache=CacheConfig(enabled=False))
    got: dict[str | None, list[list[Any]]] = {}
    for transport in (None, "httpx"):
        async with LLMService(config, transport=transport) as svc:
            got[transport] = []
            for model in MODELS:
                chunks = [c async for c in svc.astream("same chunks please", model=model)]
                got[transport].append(
                    [(c.text, c.finish_reason, c.usage, c.tool_calls) for c in chunks]
                )
    assert got[None] == got["httpx"]
    assert all(len(chunks) > 2 for chunks in got[None])


# ---- a hand-written server: odd splits, odd line ends, cut streams ---------------------------


def _event(text: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": text} if text is not None else {}
    return {"id": "c1", "model": "m", "choices": [{"delta": delta, "finish_reason": finish}]}


def _sse_body() -> bytes:
    """Every line end SSE allows, a comment, a named event, data split over lines."""
    parts = [
        b": keep-alive comment\r\n",
        b"data: " + json.dumps(_event("Hel")).encode() + b"\r\n\r\n",
        b"event: message\rdata: " + json.dumps(_event("lo")).encode() + b"\r\r",
        b"data: " + json.dumps(_event(" wor"))[:20].encode() + b"\n",
        b"data: " + json.dumps(_event(" wor"))[20:].encode() + b"\n\n",
        b"data: " + json.dumps(_event("ld", "stop")).encode() + b"\n\n",
        b"data: [DONE]\n\n",
    ]
    return b"".join(parts)


@contextlib.asynccontextmanager
async def _server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> AsyncIterator[str]:
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1"
        for w in writers:
            w.close()
        for w in writers:
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()


def _chunked_head(ctype: bytes = b"text/event-stream") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n\r\n" % ctype


async def _write_split(writer: asyncio.StreamWriter, body: bytes, every: int) -> None:
    for i in range(0, len(body), every):
        part = body[i : i + every]
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()


def _config(url: str, **kw: Any) -> LLMServiceConfig:
    return LLMServiceConfig(
        providers=[ProviderConfig(name="p", kind="openai", base_url=url, api_key="k", **kw)],
        default_model="p/gpt-4o-mini",
        cache=CacheConfig(enabled=False),
    )


@pytest.mark.parametrize("every", [1, 3, 7, 64, 4096])
@pytest.mark.parametrize("transport", [None, "httpx"])
async def test_any_split_and_line_end_gives_whole_events(every: int, transport: str | None) -> None:
    body = _sse_body()

    async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        await _write_split(writer, body, every)
        writer.write(b"0\r\n\r\n")

    async with _server(answer) as url, LLMService(_config(url), transport=transport) as svc:
        chunks = [c async for c in svc.astream("hi")]
    assert "".join(c.text for c in chunks) == "Hello world"
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("transport", [None, "httpx"])
async def test_a_partial_event_at_the_end_is_not_dispatched(transport: str | None) -> None:
    """``data: [DONE]`` without its blank line is no end marker: the stream is cut."""

    async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        body = b"data: " + json.dumps(_event("a")).encode() + b"\n\ndata: [DONE]\n"
        await _write_split(writer, body, 5)
        writer.write(b"0\r\n\r\n")

    async with _server(answer) as url, LLMService(_config(url), transport=transport) as svc:
        got: list[str] = []
        with pytest.raises(ProviderUnavailableError, match="end marker"):
            async for c in svc.astream("hi"):
                got.append(c.text)
    assert got == ["a"]


async def test_an_endless_event_is_a_typed_error_on_the_default_path() -> None:
    async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        piece = b"data: " + b"x" * (1 << 20)
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        for _ in range(17):
            writer.write(b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20)))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with _server(answer) as url, LLMService(_config(url)) as svc:
        with pytest.raises(ProviderUnavailableError, match="RemoteProtocolError"):
            async for _ in svc.astream("hi"):
                pass


_ERROR = b'{"error": {"message": "bad words", "type": "invalid_request_error"}}'


@pytest.mark.parametrize("transport", [None, "httpx"])
async def test_error_reply_and_wrong_content_type_are_typed(transport: str | None) -> None:
    for reply in (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(_ERROR), _ERROR),
    ):

        async def answer(
            _r: asyncio.StreamReader, w: asyncio.StreamWriter, r: bytes = reply
        ) -> None:
            w.write(r)

        async with _server(answer) as url, LLMService(_config(url), transport=transport) as svc:
            with pytest.raises(ProviderError) as info:
                async for _ in svc.astream("hi"):
                    pass
        if b"400" in reply:
            assert info.value.status_code == 400 and "bad words" in str(info.value)
        else:
            assert isinstance(info.value, ProviderResponseError)
            assert "expected a streamed reply" in str(info.value)


async def test_idle_stream_times_out_in_the_core_and_cancel_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        await _write_split(writer, b"data: " + json.dumps(_event("a")).encode() + b"\n\n", 4096)
        if not await reader.read(1):  # nothing more is sent: wait for the client to go
            closed.set()
        raise ConnectionError

    timeouts = RequestTimeouts(read_s=5.0, stream_idle_s=0.2, total_s=30.0)
    async with _server(answer) as url, LLMService(_config(url, timeouts=timeouts)) as svc:
        got: list[str] = []
        with pytest.raises(ProviderTimeoutError, match="no stream data"):
            async for c in svc.astream("hi"):
                got.append(c.text)
        assert got == ["a"]
        await asyncio.wait_for(closed.wait(), 5.0)
        closed.clear()

        first = asyncio.Event()

        async def consume() -> None:
            async for _ in svc.astream("hi"):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5.0)


async def test_user_supplied_mock_transport_streams_through_the_shim(
    httpx_objects: list[str],
) -> None:
    body = _sse_body()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Pieces(body, 9)
        )

    config = _config("http://mock.invalid/v1")
    async with LLMService(config, transport=lambda _p: httpx.MockTransport(handler)) as svc:
        chunks = [c async for c in svc.astream("hi")]
    assert "".join(c.text for c in chunks) == "Hello world"
    assert seen[0].headers["accept"] == "text/event-stream"
    assert "Response" in httpx_objects  # the shim reads httpx objects, as it must


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, body: bytes, every: int) -> None:
        self._body = body
        self._every = every

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), self._every):
            yield self._body[i : i + self._every]


# ---- the framer itself, as Python sees it ----------------------------------------------------


def test_stream_framer_and_bytes_decoders() -> None:
    f = _core.StreamFramer("sse")
    assert f.framing == "sse"
    assert f.feed(b"event: x\ndata: 1\r\ndata: 2\r") == []
    assert f.feed(b"\n\r\n: c\ndata: tail") == [("x", b"1\n2")]
    assert f.finish() == []  # a partial event at the end is not dispatched
    d = SSEDecoder()
    assert [(e.event, e.data) for e in d.feed(b"data: a\n\n")] == [("message", "a")]
    n = NDJSONDecoder()
    assert n.feed(b'{"a":1}\r\n\n{"b"') == [b'{"a":1}']
    assert n.close() == [b'{"b"']
    with pytest.raises(Exception, match="framing") as info:
        _core.StreamFramer("xml")
    assert type(info.value).__name__ == "ConfigError"


async def test_a_plug_in_decoder_of_bytes_is_fed_bytes_through_its_client() -> None:
    """A plug-in's ``StreamDecoder`` that is no ``FramedDecoder`` keeps working: it is
    fed the body's bytes, read through the httpx client it is given."""
    from llmrelay._types import build_request
    from llmrelay.providers import OpenAIAdapter

    fed: list[bytes] = []

    class BytesDecoder:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        @property
        def done(self) -> bool:
            return bool(self._inner.done)

        def feed(self, data: bytes) -> list[Any]:
            fed.append(data)
            return list(self._inner.feed(data))

        def close(self) -> list[Any]:
            return list(self._inner.close())

    class PlugIn(OpenAIAdapter):
        def stream_decoder(self, model: str) -> Any:
            return BytesDecoder(super().stream_decoder(model))

    body = _sse_body()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Pieces(body, 11)
        )

    adapter = PlugIn(deployment="p", base_url="http://mock.invalid/v1", api_key="k")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        req = build_request("hi", None, {})
        chunks = [c async for c in adapter.stream(client, req, "gpt-4o-mini")]
    assert "".join(c.text for c in chunks) == "Hello world"
    assert b"".join(fed) == body and len(fed) > 1
