"""A minimal OpenAI-compatible chat server on asyncio's protocol API: the benchmarks' load target.

``python benches/compare/fakeserver.py --port 0 [--cpu N]`` prints its URL on the first line
of stdout, then serves until terminated. It answers ``POST /v1/chat/completions`` with a
fixed, valid chat completion (or, when the body asks for ``"stream": true``, a fixed SSE
stream of chat.completion.chunk events), keeps connections alive, and counts what it served
(``GET /stats`` gives ``{"requests": N}``). Every reply is prebuilt bytes: the server must cost
far less than any client it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

MODEL = "gpt-4o-mini"
TEXT = "Hello! This is a benchmark reply from the fake server."
WORDS = TEXT.split(" ")


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _chunk(delta: dict[str, object], finish: str | None, usage: object = None) -> bytes:
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def _stream_body() -> bytes:
    events = [_chunk({"role": "assistant", "content": ""}, None)]
    events += [_chunk({"content": (" " if i else "") + w}, None) for i, w in enumerate(WORDS)]
    usage = {"prompt_tokens": 12, "completion_tokens": len(WORDS), "total_tokens": 12 + len(WORDS)}
    events.append(_chunk({}, "stop", usage))
    events.append(b"data: [DONE]\n\n")
    # chunked transfer encoding: one HTTP chunk per SSE event, as real providers send them
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


_JSON = _completion()
REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"x-request-id: req-bench\r\ncontent-length: %d\r\n\r\n%s" % (len(_JSON), _JSON)
)
STREAM_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"x-request-id: req-bench\r\ntransfer-encoding: chunked\r\n\r\n" + _stream_body()
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class _Stats:
    requests = 0


class Conn(asyncio.Protocol):
    """One keep-alive connection: parse heads and Content-Length bodies, answer at once."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            i = head.lower().find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            if head.startswith(b"POST /v1/chat/completions"):
                _Stats.requests += 1
                compact = body.replace(b" ", b"")
                out.append(STREAM_REPLY if b'"stream":true' in compact else REPLY)
            elif head.startswith(b"GET /stats"):
                stats = json.dumps({"requests": _Stats.requests}).encode()
                out.append(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(stats), stats)
                )
                close = True
            else:
                out.append(NOT_FOUND)
        self.buf = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
            if close:
                self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096)
    sock = server.sockets[0]
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    args = p.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
