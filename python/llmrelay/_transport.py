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

The service's non-streamed calls skip httpx objects altogether: ``submit`` hands
an adapter's :class:`~llmrelay._wire.WireRequest` to the core client and gives
back the future its reply arrives on. Every other transport gets the same
bytes through one shim: :func:`httpx_request` turns them into an
``httpx.Request``, :func:`httpx_reply` a reply back into (status, headers,
body), and :func:`httpx_exchange` does both around one exchange.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Final, TypeAlias, cast

import httpx

from llmrelay import _core
from llmrelay._wire import WireReply, WireRequest

__all__ = [
    "BODY_IDLE_EXT",
    "RustTransport",
    "error_class",
    "httpx_exchange",
    "httpx_reply",
    "httpx_request",
    "read_body",
]

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


def error_class(error: _core.HttpTransportError) -> type[httpx.TransportError]:
    """The httpx exception class of a core transport error (its kind)."""
    kind = error.args[0] if error.args else "internal"
    return _ERRORS.get(str(kind), httpx.TransportError)


def _to_httpx(error: _core.HttpTransportError, request: httpx.Request) -> httpx.TransportError:
    message = error.args[1] if len(error.args) > 1 else ""
    return error_class(error)(str(message), request=request)


async def read_body(body: _core.HttpBody) -> bytes:
    """The rest of a body the core did not read whole (chunked, or over 1 MiB).

    Raises ``_core.HttpTransportError`` as the core reports it; closes the body if
    cancelled.
    """
    loop = asyncio.get_running_loop()
    queue = _completions(loop)
    parts: list[bytes] = []
    while True:
        fut: asyncio.Future[object] = loop.create_future()
        try:
            ready = body.next_chunk(queue, fut, _CHUNK)
            chunk = await fut if ready is None else ready
        except asyncio.CancelledError:
            body.close()
            raise
        if not isinstance(chunk, bytes) or not chunk:
            return b"".join(parts)
        parts.append(chunk)


#: Parsed URLs by text: httpx parses a str URL on every Request (bounded, cleared when full).
_URLS: Final[dict[str, httpx.URL]] = {}
_MAX_URLS: Final = 1024


def httpx_request(wire: WireRequest) -> httpx.Request:
    """The shim's way in: an adapter's request bytes as an ``httpx.Request``."""
    url = _URLS.get(wire.url)
    if url is None:
        if len(_URLS) >= _MAX_URLS:
            _URLS.clear()
        url = _URLS[wire.url] = httpx.URL(wire.url)
    return httpx.Request(wire.method, url, headers=wire.headers, content=wire.body or None)


def httpx_reply(resp: httpx.Response, *, read: bool = True) -> WireReply:
    """The shim's way out: a read ``httpx.Response`` as (status, lower-case header pairs,
    body); ``read=False`` leaves the body out (an error reply already read)."""
    headers = [(k.lower(), v) for k, v in resp.headers.raw]
    return WireReply(resp.status_code, headers, resp.content if read else b"")


async def httpx_exchange(
    client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    wire: WireRequest,
    timeout: httpx.Timeout,
) -> WireReply:
    """One exchange of request bytes through httpx: straight through ``transport`` when
    given (skipping ``AsyncClient.send``'s auth, cookie and redirect handling, which
    adapters do not use), else ``client.send``. Raises httpx's exceptions."""
    request = httpx_request(wire)
    request.extensions["timeout"] = timeout.as_dict()
    if transport is not None:
        resp = await transport.handle_async_request(request)
        resp.request = request
        try:
            await resp.aread()
        finally:
            await resp.aclose()
    else:
        assert client is not None
        resp = await client.send(request)
    return httpx_reply(resp)


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

    def submit(
        self, wire: WireRequest, timeout_s: float | None
    ) -> tuple[_core.HttpRequest, asyncio.Future[object]]:
        """Hand request bytes to the core client: (the request in flight, the future its
        reply arrives on as ``(status, headers, body, version, streamed body or None)``).

        One crossing; no httpx object is built. ``timeout_s`` bounds the wait for the
        response head and for each later piece of the body. Raises (and the future
        fails with) ``_core.HttpTransportError``; abort the request if the awaiting
        task is cancelled.
        """
        loop = asyncio.get_running_loop()
        queue = self._queue
        if loop is not self._loop or queue is None:
            queue = self._queue = _completions(loop)
            self._loop = loop
        fut: asyncio.Future[object] = loop.create_future()
        pending = self._client.request(
            wire.method, wire.url, wire.headers, wire.body, timeout_s, queue, fut
        )
        return pending, fut

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
