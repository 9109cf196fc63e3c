"""pytest-benchmark of a loopback chat request through httpx: RustTransport
against httpx's default transport (smoke tests in the normal run). The server
runs in its own process; ``transport_compare.py`` prints the full table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from _chat_server import running
from llmrelay._transport import RustTransport

BATCH = 50
PAYLOAD = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running() as base:
        yield base


def batch(make: Callable[[], httpx.AsyncClient], url: str) -> Callable[[], int]:
    """A callable that sends BATCH sequential chat requests on a fresh loop."""

    async def run() -> int:
        ok = 0
        async with make() as client:
            for _ in range(BATCH):
                r = await client.post(url, content=PAYLOAD)
                ok += r.status_code == 200 and r.json()["object"] == "chat.completion"
        return ok

    return lambda: asyncio.run(run())


def test_rust_transport_chat(benchmark: Any, base_url: str) -> None:
    make = lambda: httpx.AsyncClient(transport=RustTransport())  # noqa: E731
    assert benchmark(batch(make, f"{base_url}/v1/chat/completions")) == BATCH


def test_httpx_default_chat(benchmark: Any, base_url: str) -> None:
    assert benchmark(batch(httpx.AsyncClient, f"{base_url}/v1/chat/completions")) == BATCH
