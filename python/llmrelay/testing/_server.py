"""A small HTTP/1.1 server on asyncio's protocol API: just what the fake providers need.

Requests: keep-alive, ``Content-Length`` and ``chunked`` bodies, ``Expect: 100-continue``.
Responses: whole bodies with ``Content-Length``, or streamed bodies with chunked transfer
encoding (SSE / NDJSON). The server tracks every connection and its handler task, so
``stop()`` closes the listener, cancels handlers that are still waiting (a hanging fault
included) and closes every socket: nothing is left for the garbage collector to warn about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import types
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

__all__ = ["HttpRequest", "HttpServer", "Responder"]

_log = logging.getLogger("llmrelay.testing")

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}
_STATUS_LINES = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()
}
_LINGER_RST = struct.pack("ii", 1, 0)

Headers = Iterable[tuple[str, str]]


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Status {status}\r\n".encode()


def _head(status: int, headers: Headers, extra: bytes) -> bytes:
    parts = [_status_line(status)]
    parts.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
    parts.append(extra)
    return b"".join(parts)


class HttpRequest:
    """One parsed request: method, path (no query), query string, lower-cased headers, body."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = b""
        self.keep_alive = headers.get("connection", "").lower() != "close"


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> HttpRequest:
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t":
            raise _BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        old = headers.get(key)
        headers[key] = value if old is None else f"{old}, {value}"
    path, _, query = target.partition("?")
    request = HttpRequest(method, path, query, headers)
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        request.keep_alive = False
    return request


def _parse_chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``buf[pos]``: (body, end) or None if incomplete."""
    parts: list[bytes] = []
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise _BadRequest(400, "malformed chunk size")
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(400, "malformed chunk size") from None
        if size < 0:
            raise _BadRequest(400, "malformed chunk size")
        pos = eol + 2
        if size == 0:
            while True:  # trailers, ignored, up to the blank line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return b"".join(parts), eol + 2
                pos = eol + 2
        total += size
        if total > MAX_BODY:
            raise _BadRequest(413, "body too large")
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise _BadRequest(400, "malformed chunk")
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Connection(asyncio.Protocol):
    """One client connection: parses requests from its buffer and runs them one at a time.

    A handler runs eagerly inside ``data_received``; only if it has to wait (latency, a
    hang, a slow consumer) does the rest of it continue in a task. The common request
    therefore costs no task, no future and no extra turn of the event loop.
    """

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._busy = False
        self._continued = -1
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._eof: asyncio.Future[None] | None = None
        self._responder: Responder | None = None

    # asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._server._conns.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._process()

    def eof_received(self) -> bool:
        self._wake_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server._conns.discard(self)
        self._wake_eof()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("connection lost"))
            drain.exception()  # retrieved: nobody else may be waiting

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # used by Responder -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._paused and not self.closed:
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    async def wait_eof(self) -> None:
        if self.closed:
            return
        if self._eof is None:
            self._eof = asyncio.get_running_loop().create_future()
        await self._eof

    def _wake_eof(self) -> None:
        eof, self._eof = self._eof, None
        if eof is not None and not eof.done():
            eof.set_result(None)

    # request processing ----------------------------------------------------------------------

    def _fail(self, status: int, message: str) -> None:
        body = message.encode()
        extra = b"connection: close\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n"
        with contextlib.suppress(ConnectionError):
            self.write(_head(status, (), extra % len(body)) + body)
        self._close()

    def _close(self) -> None:
        self._busy = True  # accept nothing more
        if self.transport is not None:
            self.transport.close()

    def _next_request(self) -> HttpRequest | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", 0, MAX_HEAD)
        if end < 0:
            if len(buf) >= MAX_HEAD:
                raise _BadRequest(431, "request head too large")
            return None
        request = _parse_head(bytes(buf[: end + 4]))
        pos = end + 4
        headers = request.headers
        te = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise _BadRequest(501, f"unsupported transfer-encoding {te!r}")
            parsed = _parse_chunked(buf, pos)
            if parsed is None:
                self._continue_if_expected(request, pos)
                return None
            request.body, stop = parsed
        elif length is not None:
            try:
                n = int(length)
            except ValueError:
                raise _BadRequest(400, "malformed content-length") from None
            if n < 0:
                raise _BadRequest(400, "malformed content-length")
            if n > MAX_BODY:
                raise _BadRequest(413, "body too large")
            stop = pos + n
            if len(buf) < stop:
                self._continue_if_expected(request, pos)
                return None
            request.body = bytes(buf[pos:stop])
        else:
            stop = pos
        del buf[:stop]
        self._continued = -1
        return request

    def _continue_if_expected(self, request: HttpRequest, pos: int) -> None:
        if self._continued != pos and request.headers.get("expect", "").lower() == "100-continue":
            self._continued = pos
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _process(self) -> None:
        while not self._busy and not self.closed:
            try:
                request = self._next_request()
            except _BadRequest as exc:
                return self._fail(exc.status, str(exc))
            if request is None:
                return
            responder = Responder(self, close_after=not request.keep_alive)
            coro = self._server._handler(request, responder)
            try:
                yielded = coro.send(None)
            except StopIteration:
                self._after(responder)
                continue
            except ConnectionError:
                return self._close()
            except Exception:
                _log.exception("the fake server's handler failed")
                return self._fail(500, "internal error in the fake server")
            self._busy = True
            self._responder = responder
            task = asyncio.get_running_loop().create_task(_finish(coro, yielded))
            self._server._tasks.add(task)
            task.add_done_callback(self._task_done)
            return

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._server._tasks.discard(task)
        responder, self._responder = self._responder, None
        self._busy = False
        if task.cancelled() or responder is None:
            return self._close()
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, ConnectionError):
                _log.error("the fake server's handler failed", exc_info=exc)
            return self._close()
        self._after(responder)
        if not self._busy and self._buf:
            self._process()

    def _after(self, responder: Responder) -> None:
        if not responder.started:  # pragma: no cover - handlers always answer
            self._fail(500, "no response")
        elif responder.close_after:
            self._close()


async def _finish(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Continue, in a task, a coroutine that was started eagerly and then had to wait."""
    await _resume(coro, yielded)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


class Responder:
    """Writes the one response to one request (whole, streamed, aborted or never)."""

    __slots__ = ("_conn", "close_after", "started")

    def __init__(self, conn: _Connection, close_after: bool) -> None:
        self._conn = conn
        self.close_after = close_after
        self.started = False

    def _conn_headers(self) -> bytes:
        return b"connection: close\r\n" if self.close_after else b""

    async def send(
        self, status: int, body: bytes, content_type: str, headers: Headers = ()
    ) -> None:
        """Send a whole response with a ``Content-Length``."""
        self.started = True
        extra = b"%scontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (
            self._conn_headers(),
            content_type.encode(),
            len(body),
        )
        self._conn.write(_head(status, headers, extra) + body)
        await self._conn.drain()

    async def send_partial(
        self, status: int, body: bytes, declared_length: int, content_type: str, headers: Headers
    ) -> None:
        """Declare ``declared_length`` bytes, send only ``body``, then close (a cut reply)."""
        self.started = True
        self.close_after = True
        extra = b"content-type: %s\r\ncontent-length: %d\r\n\r\n" % (
            content_type.encode(),
            declared_length,
        )
        self._conn.write(_head(status, headers, extra) + body)
        await self._conn.drain()

    async def start_stream(self, status: int, content_type: str, headers: Headers = ()) -> None:
        """Send the head of a chunked response; follow with ``write_chunk`` / ``end_stream``."""
        self.started = True
        extra = (
            b"%scontent-type: %s\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            % (self._conn_headers(), content_type.encode())
        )
        self._conn.write(_head(status, headers, extra))

    async def write_chunk(self, data: bytes) -> None:
        """Send one chunk of a streamed body (empty data sends nothing)."""
        if data:
            self._conn.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self._conn.drain()

    async def end_stream(self) -> None:
        """Send the terminating zero-length chunk."""
        self._conn.write(b"0\r\n\r\n")
        await self._conn.drain()

    async def hang(self) -> None:
        """Answer nothing; return when the client closes (or be cancelled by ``stop()``)."""
        self.started = True
        self.close_after = True
        await self._conn.wait_eof()

    def abort(self) -> None:
        """Close the connection at once with a TCP reset, sending nothing more."""
        self.started = True
        self.close_after = True
        transport = self._conn.transport
        if transport is None:  # pragma: no cover - always connected while handling
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()


Handler = Callable[[HttpRequest, Responder], Coroutine[Any, Any, None]]


class HttpServer:
    """Listens on ``host:port`` and calls ``handler(request, responder)`` for each request."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[_Connection] = set()
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting connections (``port=0`` picks a free port)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        """Stop listening, cancel in-flight handlers and close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for conn in list(self._conns):
            conn.closed = True
            if conn.transport is not None:
                conn.transport.abort()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports' close callbacks run
