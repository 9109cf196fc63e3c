"""The fakes' HTTP/1.1 layer: keep-alive, chunked bodies, 100-continue, malformed requests."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from llmrelay.testing import FakeProvider


def chat_body(text: str = "hi") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], "stream": False}


async def raw_exchange(fake: FakeProvider, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 5.0)  # until the server closes
    finally:
        writer.close()
        await writer.wait_closed()


def post(body: bytes, *extra: str, close: bool = False) -> bytes:
    head = ["POST /api/chat HTTP/1.1", "host: x", f"content-length: {len(body)}", *extra]
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_keep_alive_and_connection_close(fake_ollama: FakeProvider) -> None:
    body = msgspec.json.encode(chat_body())
    out = await raw_exchange(fake_ollama, post(body) + post(body, close=True))
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.count(b"echo: hi") == 2
    assert b"connection: close" in out.split(b"HTTP/1.1 200 OK")[2]


async def test_chunked_request_body_and_expect_continue(fake_ollama: FakeProvider) -> None:
    body = msgspec.json.encode(chat_body("chunky"))
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:]))
    head = "POST /api/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
    head += "expect: 100-continue\r\nconnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", fake_ollama.port)
    try:
        writer.write(head.encode())  # the body waits for the interim response, as a client would
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(chunked[:7])
        writer.write(chunked[7:] + b"0\r\nx-trailer: 1\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
        await writer.wait_closed()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"chunky" in out
    assert fake_ollama.requests[0].json == chat_body("chunky")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n", b"400"),
        (b"POST /api/chat HTTP/1.1\r\ncontent-length: x\r\n\r\n", b"400"),
        (b"POST /api/chat HTTP/1.1\r\ncontent-length: 999999999999\r\n\r\n", b"413"),
        (b"POST /api/chat HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", b"501"),
        (b"POST /api/chat HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
async def test_malformed_http_is_refused(
    fake_ollama: FakeProvider, data: bytes, status: bytes
) -> None:
    out = await raw_exchange(fake_ollama, data)
    assert out.startswith(b"HTTP/1.1 " + status)


async def test_http10_closes_after_the_response(fake_ollama: FakeProvider) -> None:
    out = await raw_exchange(fake_ollama, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"Ollama is running")
