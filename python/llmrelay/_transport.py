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

Streams likewise: :func:`open_stream` sends an adapter's bytes and gives back a
:class:`StreamReply` (status, header pairs, then batches of whole ``(event,
data)`` pairs). On the default transport the core frames the SSE / NDJSON body
as it arrives and hands over every whole event buffered at once: no httpx
object, one crossing per burst of events. Any other transport streams through
httpx and the same core framer (``_core.StreamFramer``), so the two paths frame
alike.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Final, TypeAlias, cast

import httpx

from llmrelay import _core
from llmrelay._wire import HeaderPairs, WireReply, WireRequest

__all__ = [
    "BODY_IDLE_EXT",
    "Events",
    "RustTransport",
    "StreamReply",
    "error_class",
    "httpx_exchange",
    "httpx_reply",
    "httpx_request",
    "next_within",
    "open_stream",
    "read_body",
    "transport_error",
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


def transport_error(error: _core.HttpTransportError) -> httpx.TransportError:
    """A core transport error as the httpx exception of its kind (no request attached)."""
    message = error.args[1] if len(error.args) > 1 else ""
    return error_class(error)(str(message))


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
        self,
        wire: WireRequest,
        timeout_s: float | None,
        *,
        body_idle_s: float | None = None,
        framing: str | None = None,
    ) -> tuple[_core.HttpRequest, asyncio.Future[object]]:
        """Hand request bytes to the core client: (the request in flight, the future its
        reply arrives on as ``(status, headers, body, version, streamed body or None)``).

        One crossing; no httpx object is built. ``timeout_s`` bounds the wait for the
        response head and for each later piece of the body (``body_idle_s``, when
        given, for each piece of a streamed body instead). With ``framing`` (``"sse"``
        or ``"ndjson"``) a 2xx body always streams, framed into whole events by the
        core. Raises (and the future fails with) ``_core.HttpTransportError``; abort
        the request if the awaiting task is cancelled.
        """
        loop = asyncio.get_running_loop()
        queue = self._queue
        if loop is not self._loop or queue is None:
            queue = self._queue = _completions(loop)
            self._loop = loop
        fut: asyncio.Future[object] = loop.create_future()
        pending = self._client.request(
            wire.method,
            wire.url,
            wire.headers,
            wire.body,
            timeout_s,
            queue,
            fut,
            body_idle_s,
            framing,
        )
        return pending, fut

    async def open_stream(
        self, wire: WireRequest, timeout_s: float | None, body_idle_s: float | None, framing: str
    ) -> StreamReply:
        """Send request bytes for a streamed reply (see :func:`open_stream`)."""
        try:
            pending, fut = self.submit(wire, timeout_s, body_idle_s=body_idle_s, framing=framing)
        except _core.HttpTransportError as e:
            raise transport_error(e) from None
        try:
            reply = cast(_Reply, await fut)
        except asyncio.CancelledError:
            pending.abort()
            raise
        except _core.HttpTransportError as e:
            raise transport_error(e) from None
        status, headers, content, _version, rest = reply
        queue = self._queue
        assert queue is not None
        return _CoreStream(status, headers, content, rest, queue)

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


#: Whole events of a stream: ``(event name, data)`` (the name is ``""`` for NDJSON).
Events: TypeAlias = list[tuple[str, bytes]]

#: Most events handed over per read of a framed body.
_EVENTS: Final = 1024


class StreamReply(abc.ABC):
    """A streamed reply: its status and header pairs, then batches of whole events.

    ``next_events`` returns the events that arrived (at least one), ``[]`` at the end;
    it raises httpx's exception of a transport failure, ``TimeoutError`` (or
    ``httpx.ReadTimeout``) after the idle bound with no data. ``read`` gives the whole
    body of a reply that is not a stream (an error reply); ``aclose`` drops the
    connection if the body was not read to the end.
    """

    __slots__ = ("headers", "status")

    status: int
    headers: HeaderPairs

    @abc.abstractmethod
    async def next_events(self) -> Events: ...

    @abc.abstractmethod
    async def read(self) -> bytes: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class _CoreStream(StreamReply):
    """A reply of the core's client: the body framed on the runtime."""

    __slots__ = ("_content", "_queue", "_rest")

    def __init__(
        self,
        status: int,
        headers: HeaderPairs,
        content: bytes,
        rest: _core.HttpBody | None,
        queue: _core.Completions,
    ) -> None:
        self.status = status
        self.headers = headers
        self._content = content
        self._rest = rest
        self._queue = queue

    async def next_events(self) -> Events:
        rest = self._rest
        if rest is None or rest.framing is None:
            # not framed (an error reply, read with ``read``): no events
            return []
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        try:
            ready = rest.next_events(self._queue, fut, _EVENTS)
            return ready if ready is not None else cast(Events, await fut)
        except asyncio.CancelledError:
            rest.close()
            raise
        except _core.HttpTransportError as e:
            raise transport_error(e) from None

    async def read(self) -> bytes:
        rest = self._rest
        if rest is None or rest.framing is not None:
            return self._content
        try:
            return self._content + await read_body(rest)
        except _core.HttpTransportError as e:
            raise transport_error(e) from None

    async def aclose(self) -> None:
        if self._rest is not None:
            self._rest.close()


class _HttpxStream(StreamReply):
    """A reply read through httpx (any other transport), framed by the core's framer."""

    __slots__ = ("_ended", "_framer", "_idle", "_iter", "_resp")

    def __init__(self, resp: httpx.Response, framing: str, idle_s: float | None) -> None:
        self.status = resp.status_code
        self.headers = [(k.lower(), v) for k, v in resp.headers.raw]
        self._resp = resp
        self._framer = _core.StreamFramer(framing)
        # the transport times the idle gap itself when it says so (the core's, shimmed)
        self._idle = None if BODY_IDLE_EXT in resp.extensions else idle_s
        self._iter: AsyncIterator[bytes] | None = None
        self._ended = False

    async def next_events(self) -> Events:
        if self._iter is None:
            self._iter = self._resp.aiter_bytes()
        while not self._ended:
            try:
                if self._idle is None:
                    data = await anext(self._iter)
                else:
                    data = await next_within(self._iter, self._idle)
            except StopAsyncIteration:
                self._ended = True
                return self._frame(None)
            events = self._frame(data)
            if events:
                return events
        return []

    def _frame(self, data: bytes | None) -> Events:
        try:
            return self._framer.finish() if data is None else self._framer.feed(data)
        except _core.HttpTransportError as e:
            raise transport_error(e) from None

    async def read(self) -> bytes:
        return await self._resp.aread()

    async def aclose(self) -> None:
        if self._iter is not None:
            with contextlib.suppress(Exception):
                await self._iter.aclose()  # type: ignore[attr-defined]  # httpx gives a generator
        await self._resp.aclose()


async def open_stream(
    client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    wire: WireRequest,
    timeout: httpx.Timeout,
    body_idle_s: float | None,
    framing: str,
) -> StreamReply:
    """Send an adapter's request bytes for a streamed reply framed as ``framing``
    (``"sse"`` or ``"ndjson"``): straight to the core's client on the default
    transport, else through httpx (``transport`` directly when given, else
    ``client.send``). ``timeout.read`` bounds the wait for the head; ``body_idle_s``
    each wait for data of the body. Raises httpx's exceptions."""
    if type(transport) is RustTransport:  # a subclass may override handle_async_request
        return await transport.open_stream(wire, timeout.read, body_idle_s, framing)
    request = httpx_request(wire)
    request.extensions["timeout"] = timeout.as_dict()
    if body_idle_s is not None:
        request.extensions[BODY_IDLE_EXT] = body_idle_s
    if transport is not None:
        resp = await transport.handle_async_request(request)
        resp.request = request
    else:
        assert client is not None
        resp = await client.send(request, stream=True)
    return _HttpxStream(resp, framing, body_idle_s)


#: Turns of the loop a fired idle timer waits for data that already arrived.
_STALL_GRACE_TURNS: Final = 3


async def next_within(it: AsyncIterator[bytes], idle_s: float) -> bytes:
    """The next piece of ``it``, or TimeoutError after ``idle_s`` with nothing.

    For a transport that does not time the idle gap itself. The read runs as its own
    task, so a timer that fired late (a stalled loop: asyncio runs expired timers
    before the callbacks of data received meanwhile) lets already-arrived data
    through first instead of cancelling the read.
    """
    step: asyncio.Future[bytes] = asyncio.ensure_future(anext(it))
    try:
        done, _ = await asyncio.wait((step,), timeout=idle_s)
        for _ in range(_STALL_GRACE_TURNS):
            if done or step.done():
                return step.result()
            await asyncio.sleep(0)
        if step.done():
            return step.result()
    except BaseException:
        step.cancel()
        raise
    step.cancel()
    await asyncio.wait((step,))  # let the read finish cancelling before the body is closed
    raise TimeoutError
