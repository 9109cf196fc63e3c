"""pytest-benchmark of request validation and stream decoding (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

import msgspec

from llmrelay._types import build_request, to_messages
from llmrelay.providers._sse import SSEDecoder
from llmrelay.providers.openai import OpenAIAdapter

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]
PARAMS = {"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]}


def test_to_messages_three_dicts(benchmark: Any) -> None:
    msgs = benchmark(to_messages, MESSAGES)
    assert [m.to_dict() for m in msgs] == MESSAGES


def test_build_request(benchmark: Any) -> None:
    req = benchmark(build_request, MESSAGES, "gpt-4o-mini", PARAMS)
    assert req.max_tokens == 64 and len(req.messages) == 3


def test_openai_chat_body_encode(benchmark: Any) -> None:
    adapter = OpenAIAdapter(deployment="d", base_url="http://x/v1")
    req = build_request(MESSAGES, None, PARAMS)

    def run() -> bytes:
        return msgspec.json.encode(adapter.chat_body(req, "gpt-4o-mini", stream=False))

    assert b'"max_tokens":64' in benchmark(run)


def test_sse_decode_100_events(benchmark: Any) -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    data = event * 100

    def run() -> int:
        return len(SSEDecoder().feed(data))

    assert benchmark(run) == 100
