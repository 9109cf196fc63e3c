"""An httpx transport on the core's tokio HTTP client.

``RustTransport`` hands each request to ``_core.HttpClient`` (hyper with a
connection pool, keep-alive, HTTP/2 by ALPN, rustls TLS) and awaits an asyncio
future. Requests started in one turn of the event loop are handed to the
runtime together at the end of the turn; the runtime queues each result on the
loop's ``_core.Completions`` and wakes the loop through a socket it watches,
and the loop settles every queued future at once. The runtime never waits for
the GIL; a small response costs one crossing, a streamed one a crossing per
burst of data. Use it wherever an
``httpx.AsyncClient`` is used::

    client = httpx.AsyncClient(transport=RustTransport())

Timeouts: the transport's ``connect_timeout_s`` bounds opening a TCP
connection; the request's httpx ``read`` timeout bounds the wait for the
response head (from sending the request) and for each later piece of the body.
A request extension ``"llmrelay.body_idle_s"`` bounds each wait for a piece of
a streamed body instead; it is timed on the core's runtime, where the bytes
arrive, so a stalled event loop (a GC pause) is never taken for a silent
provider. The response then carries the same extension, telling the reader
that the idle gap is already timed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Final, TypeAlias, cast

import httpx

from llmrelay import _core

__all__ = ["BODY_IDLE_EXT", "RustTransport"]

#: httpx exception class for each kind of ``_core.HttpTransportError``.
_ERRORS: Final[dict[str, type[httpx.TransportError]]] = {
    "invalid_request": httpx.LocalProtocolError,
    "unsupported_protocol": httpx.UnsupportedProtocol,
    "connect": httpx.ConnectError,
    "connect_timeout": httpx.ConnectTimeout,
    "read_timeout": httpx.ReadTimeout,
    "write": httpx.WriteError,
    "read": httpx.ReadError,
    "protocol": httpx.RemoteProtocolError,
    "closed": httpx.ReadError,
    "internal": httpx.TransportError,
}

_VERSIONS: Final[dict[str, bytes]] = {
    v: v.encode() for v in ("HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3", "HTTP/0.9")
}

#: What the core delivers for a completed request.
_Reply: TypeAlias = tuple[int, list[tuple[bytes, bytes]], bytes, str, "_core.HttpBody | None"]

#: Most bytes handed over per read of a streamed body.
_CHUNK: Final = 64 * 1024

#: The request (and response) extension naming the idle bound of a streamed body.
BODY_IDLE_EXT: Final = "llmrelay.body_idle_s"


#: The completion queue of each event loop, registered as a reader on it.
_QUEUES: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _core.Completions]] = (
    weakref.WeakKeyDictionary()
)


def _completions(loop: asyncio.AbstractEventLoop) -> _core.Completions:
    """The loop's completion queue, created (and watched) on first use."""
    queue = _QUEUES.get(loop)
    if queue is None:
        queue = _core.Completions(loop.call_soon)
        loop.add_reader(queue.fileno(), queue.drain)
        _QUEUES[loop] = queue
    return queue


def _to_httpx(error: _core.HttpTransportError, request: httpx.Request) -> httpx.TransportError:
    kind, message = [*error.args, "internal", ""][:2]
    cls = _ERRORS.get(str(kind), httpx.TransportError)
    return cls(str(message), request=request)


class _StreamedBody(httpx.AsyncByteStream):
    """A body still arriving: each step awaits everything buffered so far."""

    __slots__ = ("_body", "_request")

    def __init__(self, body: _core.HttpBody, request: httpx.Request) -> None:
        self._body = body
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue = _completions(loop)
        while True:
            fut: asyncio.Future[object] = loop.create_future()
            try:
                ready = self._body.next_chunk(queue, fut, _CHUNK)
                chunk = await fut if ready is None else ready
            except asyncio.CancelledError:
                self._body.close()
                raise
            except _core.HttpTransportError as e:
                raise _to_httpx(e, self._request) from None
            if not isinstance(chunk, bytes):  # pragma: no cover - the core sends bytes
                raise httpx.ReadError("the body stream gave a non-bytes piece")
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        self._body.close()


class RustTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` async transport backed by the core's pooled tokio/hyper client.

    ``connect_timeout_s`` bounds each TCP connect; ``pool_idle_timeout_s`` is
    how long an idle connection is kept; ``max_idle_per_host`` how many idle
    connections are kept per host (hyper opens as many as are needed at once);
    ``http2`` offers HTTP/2 by ALPN on TLS connections. Bad values raise
    ``llmrelay.errors.ConfigError`` naming the parameter.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 10.0,
        pool_idle_timeout_s: float = 90.0,
        max_idle_per_host: int = 64,
        http2: bool = True,
    ) -> None:
        self._client = _core.HttpClient(
            connect_timeout_s=connect_timeout_s,
            pool_idle_timeout_s=pool_idle_timeout_s,
            max_idle_per_host=max_idle_per_host,
            http2=http2,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: _core.Completions | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout")
        read_timeout = timeout.get("read") if timeout else None
        body_idle = request.extensions.get(BODY_IDLE_EXT)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        loop = asyncio.get_running_loop()
        queue = self._queue
        if loop is not self._loop or queue is None:
            queue = self._queue = _completions(loop)
            self._loop = loop
        fut: asyncio.Future[object] = loop.create_future()
        try:
            pending = self._client.request(
                request.method,
                str(request.url),
                request.headers.raw,
                body,
                read_timeout,
                queue,
                fut,
                body_idle,
            )
        except _core.HttpTransportError as e:
            raise _to_httpx(e, request) from None
        try:
            result = await fut
        except asyncio.CancelledError:
            pending.abort()
            raise
        except _core.HttpTransportError as e:
            raise _to_httpx(e, request) from None
        status, headers, content, version, stream = cast(_Reply, result)
        extensions: dict[str, object] = {"http_version": _VERSIONS.get(version) or version.encode()}
        if body_idle is not None:
            extensions[BODY_IDLE_EXT] = body_idle
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content) if stream is None else _StreamedBody(stream, request),
            extensions=extensions,
        )

    async def aclose(self) -> None:
        self._client.close()
