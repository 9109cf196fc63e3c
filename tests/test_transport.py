"""RustTransport against a real asyncio HTTP/1.1 server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from llmrelay import _core, errors
from llmrelay._transport import RustTransport

Request = tuple[str, str, list[str], bytes]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request: method, path, header lines, body; ``None`` at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = [line for line in lines[1:] if line]
    length = 0
    for line in headers:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


def reply(status: int, body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@dataclass
class Server:
    """Routes by path; sets events the tests wait on."""

    base: str = ""
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    peer_closed: asyncio.Event = field(default_factory=asyncio.Event)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.idle.clear()
        try:
            while (req := await read_request(reader)) is not None:
                if not await self.route(req, reader, writer):
                    break
        finally:
            writer.close()
            self.writers.discard(writer)
            if not self.writers:
                self.idle.set()

    async def stop(self) -> None:
        """End every handler: release the streams, close the connections."""
        self.release.set()
        for writer in list(self.writers):
            writer.transport.abort()
        if self.writers:
            await asyncio.wait_for(self.idle.wait(), 5)

    async def route(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        method, path, headers, body = req
        if path == "/echo":
            tags = [h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("x-tag:")]
            payload = json.dumps({"method": method, "tags": tags, "body": body.decode()})
            extra = "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: application/json\r\n"
            writer.write(reply(200, payload.encode(), extra))
        elif path.startswith("/status/"):
            writer.write(reply(int(path.rsplit("/", 1)[1]), b""))
        elif path == "/gzip":
            writer.write(reply(200, gzip.compress(b"unzipped"), "Content-Encoding: gzip\r\n"))
        elif path.startswith("/stream/"):
            await self.stream(writer, int(path.rsplit("/", 1)[1]))
        elif path == "/hang":
            self.seen.set()
            await reader.read()  # returns when the client drops the connection
            self.peer_closed.set()
            return False
        elif path == "/reset":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        await writer.drain()
        return True

    async def stream(self, writer: asyncio.StreamWriter, lines: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        line = b"data: hello\n\n"
        writer.write(b"".join(b"%x\r\n%s\r\n" % (len(line), line) for _ in range(lines)))
        await writer.drain()
        self.seen.set()
        await self.release.wait()
        writer.write(b"5\r\nlast\n\r\n0\r\n\r\n")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    listener = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    srv.base = f"http://127.0.0.1:{port}"
    yield srv
    listener.close()
    await srv.stop()
    await listener.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=RustTransport(), timeout=5.0) as c:
        yield c


async def test_post_with_body_and_headers_both_ways(
    server: Server, client: httpx.AsyncClient
) -> None:
    headers = [("X-Tag", "a"), ("X-Tag", "b")]
    for i in range(3):  # the same kept-alive connection
        r = await client.post(f"{server.base}/echo", content=f"hi {i}", headers=headers)
        assert r.status_code == 200
        assert r.json() == {"method": "POST", "tags": ["a", "b"], "body": f"hi {i}"}
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert r.http_version == "HTTP/1.1"
    r = await client.get(f"{server.base}/echo")
    assert r.json()["method"] == "GET" and r.json()["body"] == ""


async def test_status_codes_and_encoded_bodies(server: Server, client: httpx.AsyncClient) -> None:
    for code in (201, 204, 404, 429, 503):
        r = await client.get(f"{server.base}/status/{code}")
        assert r.status_code == code and r.content == b""
    r = await client.get(f"{server.base}/gzip")
    assert r.content == b"unzipped"  # httpx decodes; the transport passes raw bytes


async def test_stream_arrives_in_big_pieces(server: Server) -> None:
    transport = RustTransport()
    r = await transport.handle_async_request(httpx.Request("GET", f"{server.base}/stream/200"))
    assert r.status_code == 200
    await asyncio.wait_for(server.seen.wait(), 5)
    body = r.stream._body  # type: ignore[attr-defined]
    for _ in range(500):  # bounded: until the runtime has buffered all 200 events
        if body.buffered >= 200 * 13:
            break
        await asyncio.sleep(0.01)
    pieces = r.aiter_raw()
    assert await anext(pieces) == b"data: hello\n\n" * 200  # one crossing for all
    server.release.set()
    assert b"".join([p async for p in pieces]) == b"last\n"
    await r.aclose()
    await transport.aclose()


async def test_large_stream_in_capped_pieces(server: Server, client: httpx.AsyncClient) -> None:
    server.release.set()
    async with client.stream("GET", f"{server.base}/stream/20000") as r:
        sizes = [len(p) async for p in r.aiter_raw()]
    assert sum(sizes) == 20000 * 13 + 5
    assert max(sizes) <= 64 * 1024
    assert len(sizes) < 20000 // 10, len(sizes)


async def test_connection_refused_is_connect_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await client.get(f"http://127.0.0.1:{port}/")


async def test_hanging_server_times_out_within_the_timeout(server: Server) -> None:
    timeout = httpx.Timeout(5.0, read=0.2)
    async with httpx.AsyncClient(transport=RustTransport(), timeout=timeout) as client:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{server.base}/hang")
        assert time.monotonic() - start < 2.0


async def test_reset_mid_body_is_an_httpx_error(server: Server, client: httpx.AsyncClient) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.get(f"{server.base}/reset")


async def test_cancellation_aborts_the_request(server: Server, client: httpx.AsyncClient) -> None:
    task = asyncio.create_task(client.get(f"{server.base}/hang"))
    await asyncio.wait_for(server.seen.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The runtime dropped the request, so the server sees its connection close.
    await asyncio.wait_for(server.peer_closed.wait(), 5)
    r = await client.get(f"{server.base}/echo")  # the transport still works
    assert r.status_code == 200


async def test_cancelled_stream_read_closes_the_body(
    server: Server, client: httpx.AsyncClient
) -> None:
    async with client.stream("GET", f"{server.base}/stream/1") as r:
        pieces = r.aiter_raw()
        assert await anext(pieces) == b"data: hello\n\n"
        reader = asyncio.ensure_future(anext(pieces))
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader


async def test_many_concurrent_requests(server: Server, client: httpx.AsyncClient) -> None:
    async def one(i: int) -> str:
        r = await client.post(f"{server.base}/echo", content=str(i))
        return str(r.json()["body"])

    got = await asyncio.gather(*(one(i) for i in range(200)))
    assert got == [str(i) for i in range(200)]


async def test_transport_used_directly_and_bad_input(server: Server) -> None:
    transport = RustTransport(connect_timeout_s=1.0, http2=False)
    response = await transport.handle_async_request(httpx.Request("GET", f"{server.base}/echo"))
    assert response.status_code == 200
    await response.aread()
    assert response.json()["method"] == "GET"
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))
    await transport.aclose()
    with pytest.raises(errors.ConfigError, match="connect_timeout_s=0"):
        RustTransport(connect_timeout_s=0.0)
    with pytest.raises(errors.ConfigError, match="pool_idle_timeout_s=-1"):
        RustTransport(pool_idle_timeout_s=-1.0)


async def test_core_client_rejects_bad_arguments() -> None:
    client = _core.HttpClient()
    queue = _core.Completions()
    fut = asyncio.get_running_loop().create_future()
    url = "http://127.0.0.1/"
    with pytest.raises(errors.ConfigError, match="timeout_s=0"):
        client.request("GET", url, [], b"", 0.0, queue, fut)
    with pytest.raises(_core.HttpTransportError, match="header name"):
        client.request("GET", url, [(b"a b", b"c")], b"", None, queue, fut)
    assert queue.pending() == 0 and queue.drain() == 0 and not fut.done()
    assert "http2=True" in repr(client)


async def test_completions_settle_many_futures_in_one_drain(server: Server) -> None:
    """Without the loop watching the queue, replies wait in it; one drain settles all."""
    client = _core.HttpClient()
    queue = _core.Completions()
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(5)]
    for fut in futs:
        client.request("GET", f"{server.base}/status/204", [], b"", 5.0, queue, fut)
    cancelled = loop.create_future()
    client.request("GET", f"{server.base}/status/204", [], b"", 5.0, queue, cancelled)
    cancelled.cancel()
    for _ in range(500):  # bounded: until the runtime queued all six replies
        if queue.pending() == 6:
            break
        await asyncio.sleep(0.01)
    assert queue.drain() == 6
    assert [f.result()[0] for f in futs] == [204] * 5
    assert cancelled.cancelled()


async def test_abort_before_flush_never_sends(server: Server) -> None:
    client = _core.HttpClient()
    loop = asyncio.get_running_loop()
    queue = _core.Completions(loop.call_soon)
    fut = loop.create_future()
    pending = client.request("GET", f"{server.base}/hang", [], b"", 5.0, queue, fut)
    pending.abort()
    assert queue.flush() == 1 and queue.flush() == 0
    for _ in range(500):  # bounded: until the dropped job reported
        if queue.pending() == 1:
            break
        await asyncio.sleep(0.01)
    assert queue.drain() == 1
    with pytest.raises(_core.HttpTransportError, match="internal"):
        fut.result()
    assert not server.seen.is_set() and not pending.finished()


async def test_https_goes_through_rustls(client: httpx.AsyncClient) -> None:
    """No network in tests: a plain-text peer makes the TLS handshake fail."""

    async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(not_tls, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://127.0.0.1:{port}/")
    finally:
        listener.close()
        await listener.wait_closed()
