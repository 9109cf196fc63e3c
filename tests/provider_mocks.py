"""Helpers for the adapter tests: scripted httpx.MockTransport replies and byte streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from llmrelay import errors

API_KEY = "sk-test-SECRET-0123456789"


class ChunkStream(httpx.AsyncByteStream):
    """Yields the given byte chunks; optionally then hangs forever (an idle stream)."""

    def __init__(self, chunks: list[bytes], *, hang: bool = False) -> None:
        self.chunks = chunks
        self.hang = hang
        self.closed = False
        self.never = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.hang:
            await self.never.wait()  # never set: the test's idle timeout must fire

    async def aclose(self) -> None:
        self.closed = True


class Server:
    """A MockTransport handler that records requests and replays scripted replies."""

    def __init__(
        self, *replies: httpx.Response | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply(request) if callable(reply) else reply

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    @property
    def body(self) -> Any:
        return msgspec.json.decode(self.requests[-1].content)


def json_reply(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=msgspec.json.encode(data),
        headers={"content-type": "application/json", **(headers or {})},
    )


def stream_reply(
    chunks: list[bytes], content_type: str = "text/event-stream", *, hang: bool = False
) -> tuple[httpx.Response, ChunkStream]:
    stream = ChunkStream(chunks, hang=hang)
    return httpx.Response(200, stream=stream, headers={"content-type": content_type}), stream


def sse(*events: Any, event_names: bool = False) -> bytes:
    out = []
    for ev in events:
        if isinstance(ev, str):
            out.append(f"data: {ev}\n\n")
        elif event_names:
            out.append(f"event: {ev['type']}\ndata: {msgspec.json.encode(ev).decode()}\n\n")
        else:
            out.append(f"data: {msgspec.json.encode(ev).decode()}\n\n")
    return "".join(out).encode()


def ndjson(*objs: Any) -> bytes:
    return b"".join(msgspec.json.encode(o) + b"\n" for o in objs)


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


# status, body, expected error class, exact class (not a subclass)?
ERROR_CASES: list[tuple[int, Any, type[errors.ProviderError]]] = [
    (
        400,
        {"error": {"message": "bad field", "type": "invalid_request_error"}},
        errors.ProviderError,
    ),
    (
        400,
        {"error": {"message": "too long", "code": "context_length_exceeded"}},
        errors.ContextLengthError,
    ),
    (400, {"error": {"message": "prompt is too long: 300000 tokens"}}, errors.ContextLengthError),
    (
        400,
        {"error": {"message": "This model's maximum context length is 8192 tokens"}},
        errors.ContextLengthError,
    ),
    (400, {"error": {"message": "blocked", "code": "content_filter"}}, errors.ContentFilterError),
    (
        401,
        {"error": {"message": f"Incorrect API key provided: {API_KEY}"}},
        errors.AuthenticationError,
    ),
    (403, {"error": "forbidden"}, errors.AuthenticationError),
    (404, {"error": "model 'x' not found"}, errors.ProviderError),
    (408, {"error": {"message": "timeout"}}, errors.ProviderTimeoutError),
    (422, b"unprocessable", errors.ProviderError),
    (429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, errors.RateLimitError),
    (500, {"error": {"message": "oops"}}, errors.ProviderUnavailableError),
    (502, b"<html>bad gateway</html>", errors.ProviderUnavailableError),
    (503, {"error": "unavailable"}, errors.ProviderUnavailableError),
    (504, b"", errors.ProviderUnavailableError),
    (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        errors.ProviderUnavailableError,
    ),
]


def error_reply(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return httpx.Response(
        status,
        content=content,
        headers={
            "content-type": "application/json",
            "x-request-id": "req_123",
            "retry-after": "7",
        },
    )


def check_error(
    err: errors.ProviderError, status: int, expected: type[errors.ProviderError]
) -> None:
    assert type(err) is expected, (type(err), expected)
    assert err.status_code == status
    assert err.provider == "dep" and err.request_id == "req_123"
    assert API_KEY not in str(err) and API_KEY not in repr(err.args)
    if expected is errors.RateLimitError:
        assert isinstance(err, errors.RateLimitError) and err.retry_after == 7.0
    retryable = status in (408, 429) or status >= 500
    assert err.retryable is retryable
