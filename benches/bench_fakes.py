"""Throughput smoke bench of the fake providers: sequential requests through httpx.

Besides the pytest-benchmark figure (client + server round trip), each case prints the
server's own CPU time per request, read from the fake's thread CPU clock: the fakes are the
load target of the other benchmarks, so they must cost far less than any client.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import msgspec
import pytest

from llmrelay.testing import FakeProvider

CASES: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "openai": (
        "/v1/chat/completions",
        {"authorization": "Bearer bench"},
        {"model": "m", "messages": [{"role": "user", "content": "hello"}]},
    ),
    "openai-stream": (
        "/v1/chat/completions",
        {"authorization": "Bearer bench"},
        {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True},
    ),
    "anthropic-stream": (
        "/v1/messages",
        {"x-api-key": "bench", "anthropic-version": "2023-06-01"},
        {
            "model": "m",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
        },
    ),
    "ollama": (
        "/api/chat",
        {},
        {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": False},
    ),
}


def _thread_cpu(name: str) -> float:
    thread = next(t for t in threading.enumerate() if t.name == name)
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _reply_text(case: str, r: httpx.Response) -> str:
    if case == "openai":
        return str(r.json()["choices"][0]["message"]["content"])
    if case == "ollama":
        return str(r.json()["message"]["content"])
    events = [msgspec.json.decode(line[6:]) for line in r.text.split("\n") if line[6:7] == "{"]
    if case == "openai-stream":
        assert r.text.endswith("data: [DONE]\n\n")
        return "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert events[-1] == {"type": "message_stop"}
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")


@pytest.mark.parametrize("case", list(CASES))
def test_fake_sequential_requests(benchmark: Any, case: str) -> None:
    protocol = case.split("-")[0]
    path, headers, body = CASES[case]
    fake = FakeProvider(protocol)  # type: ignore[arg-type]
    with fake.run_in_thread(), httpx.Client(base_url=fake.url, headers=headers) as client:

        def one() -> httpx.Response:
            return client.post(path, json=body)

        r = benchmark(one)
        assert r.status_code == 200 and _reply_text(case, r) == "echo: hello"
        n = 200
        before = _thread_cpu(f"llmrelay-fake-{protocol}")
        for _ in range(n):
            assert one().status_code == 200
        per_request = (_thread_cpu(f"llmrelay-fake-{protocol}") - before) / n
        print(f"\n{case}: server CPU {per_request * 1e6:.1f} us/request")
        assert fake.request_count >= n + 1
