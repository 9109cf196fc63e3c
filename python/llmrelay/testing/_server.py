"""A small HTTP/1.1 server on asyncio streams: just what the fake providers need.

Requests: keep-alive, ``Content-Length`` and ``chunked`` bodies, ``Expect: 100-continue``.
Responses: whole bodies with ``Content-Length``, or streamed bodies with chunked transfer
encoding (SSE / NDJSON). The server tracks every connection and its handler task, so
``stop()`` closes the listener, cancels handlers that are still waiting (a hanging fault
included) and closes every socket: nothing is left for the garbage collector to warn about.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["HttpRequest", "HttpServer", "Responder"]

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


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(400, "malformed chunk size") from None
        if size < 0:
            raise _BadRequest(400, "malformed chunk size")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise _BadRequest(413, "body too large")
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise _BadRequest(400, "malformed chunk")
        parts.append(chunk[:-2])


class Responder:
    """Writes the one response to one request (whole, streamed, aborted or never)."""

    __slots__ = ("_reader", "_writer", "close_after", "started")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close_after: bool
    ) -> None:
        self._reader = reader
        self._writer = writer
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
        self._writer.write(_head(status, headers, extra) + body)
        await self._writer.drain()

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
        self._writer.write(_head(status, headers, extra) + body)
        await self._writer.drain()

    async def start_stream(self, status: int, content_type: str, headers: Headers = ()) -> None:
        """Send the head of a chunked response; follow with ``write_chunk`` / ``end_stream``."""
        self.started = True
        extra = (
            b"%scontent-type: %s\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            % (
                self._conn_headers(),
                content_type.encode(),
            )
        )
        self._writer.write(_head(status, headers, extra))

    async def write_chunk(self, data: bytes) -> None:
        """Send one chunk of a streamed body (empty data sends nothing)."""
        if data:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self._writer.drain()

    async def end_stream(self) -> None:
        """Send the terminating zero-length chunk."""
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def hang(self) -> None:
        """Answer nothing; return when the client closes (or be cancelled by ``stop()``)."""
        self.started = True
        self.close_after = True
        while await self._reader.read(65536):
            pass

    def abort(self) -> None:
        """Close the connection at once with a TCP reset, sending nothing more."""
        self.started = True
        self.close_after = True
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self._writer.transport.abort()


Handler = Callable[[HttpRequest, Responder], Awaitable[None]]


class HttpServer:
    """Listens on ``host:port`` and calls ``handler(request, responder)`` for each request."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting connections (``port=0`` picks a free port)."""
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=MAX_HEAD, reuse_address=True
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
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while self._server is not None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed between requests
            except asyncio.LimitOverrunError:
                await _plain_error(writer, 431, "request head too large")
                return
            try:
                request = _parse_head(head)
                await self._read_body(request, reader, writer)
            except _BadRequest as exc:
                await _plain_error(writer, exc.status, str(exc))
                return
            except asyncio.LimitOverrunError:
                await _plain_error(writer, 400, "malformed chunked body")
                return
            responder = Responder(reader, writer, close_after=not request.keep_alive)
            await self._handler(request, responder)
            if not responder.started:  # pragma: no cover - handlers always answer
                await responder.send(500, b"no response", "text/plain")
            if responder.close_after:
                return

    @staticmethod
    async def _read_body(
        request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        headers = request.headers
        te = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if te is None and length is None:
            return
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise _BadRequest(501, f"unsupported transfer-encoding {te!r}")
            request.body = await _read_chunked(reader)
            return
        assert length is not None
        try:
            n = int(length)
        except ValueError:
            raise _BadRequest(400, "malformed content-length") from None
        if n < 0:
            raise _BadRequest(400, "malformed content-length")
        if n > MAX_BODY:
            raise _BadRequest(413, "body too large")
        if n:
            request.body = await reader.readexactly(n)


async def _plain_error(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = message.encode()
    writer.write(
        _head(
            status,
            (),
            b"connection: close\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body),
        )
    )
    await writer.drain()
