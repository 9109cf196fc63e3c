"""Throughput smoke bench of the fake providers: sequential requests through httpx.

Besides the pytest-benchmark figure (client + server round trip), each case prints the
server's own CPU time per request, read from the CPU clock of the fake's process: the fakes
are the load target of the other benchmarks, so they must cost far less than any client.
"""

from __future__ import annotations

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


def _process_cpu_s(pid: int) -> float | None:
    """Time a process has spent on a CPU, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return None


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
    # a subprocess, so that its CPU time is the server's alone (no client, no shared GIL)
    with (
        FakeProvider.spawn(protocol) as fake,  # type: ignore[arg-type]
        httpx.Client(base_url=fake.url, headers=headers) as client,
    ):

        def one() -> httpx.Response:
            return client.post(path, json=body)

        r = benchmark(one)
        assert r.status_code == 200 and _reply_text(case, r) == "echo: hello"
        n = 1000
        before = _process_cpu_s(fake.process.pid)
        for _ in range(n):
            assert one().status_code == 200
        after = _process_cpu_s(fake.process.pid)
        if before is not None and after is not None:
            print(f"\n{case}: server CPU {(after - before) / n * 1e6:.1f} us/request")
