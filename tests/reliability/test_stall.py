"""A stalled event loop (a long GC pause) is not a silent provider, and a service closed
from another thread ends every sync stream with a typed error instead of a hang.

The provider runs in a process of its own, so it keeps sending while the test's loop
is blocked: the bytes are there when the loop wakes up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from llmrelay import CacheConfig, CircuitBreakerConfig, LLMService, RequestTimeouts
from llmrelay.errors import LLMRelayError
from service_helpers import ConfigFactory
from soak_helpers import report

STREAMS = 32
IDLE_S = 0.25
STALL_S = 0.6  # longer than the idle timeout


@pytest.mark.parametrize("transport", ["rust", "httpx"])
async def test_loop_stall_does_not_fail_healthy_streams(
    make_config: ConfigFactory, fakes: dict[str, Any], transport: str
) -> None:
    fakes["openai"].stream_chunk_delay_s = 0.03
    config = make_config(
        cache=CacheConfig(enabled=False),
        timeouts=RequestTimeouts(read_s=5.0, stream_idle_s=IDLE_S, total_s=30.0),
        circuit_breaker=CircuitBreakerConfig(minimum_calls=4, window_size=8),
    )
    started = asyncio.Event()
    n_started = 0

    async def one(svc: LLMService, i: int) -> Any:
        nonlocal n_started
        text = []
        try:
            async for c in svc.astream(f"a healthy stream number {i} with several words"):
                if not text:
                    n_started += 1
                    if n_started == STREAMS:
                        started.set()
                text.append(c.text)
        except LLMRelayError as e:
            return e
        return "".join(text)

    async with LLMService(config, transport=transport) as svc:
        tasks = [asyncio.create_task(one(svc, i)) for i in range(STREAMS)]
        await asyncio.wait_for(started.wait(), 20)
        # the loop stalls, as in a long GC pause; the provider goes on
        time.sleep(STALL_S)  # noqa: ASYNC251
        results = await asyncio.gather(*tasks)
        failed = [r for r in results if isinstance(r, LLMRelayError)]
        assert not failed, failed[:3]
        assert all(f"number {i}" in r for i, r in enumerate(results))
        assert svc._engine.orchestrator.runtimes["openai"].breaker.state == "closed"


def test_close_from_another_thread_ends_every_sync_stream(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    """Threads iterating ``stream()`` while another thread closes the service: each ends,
    within a bound, with its whole stream or a typed error; none hangs."""
    fakes["openai"].stream_chunk_delay_s = 0.02
    rounds, threads_n = 10, 32
    outcomes: dict[str, int] = {}
    for r in range(rounds):
        svc = LLMService(make_config(cache=CacheConfig(enabled=False)))
        results = _stream_and_close(svc, r, threads_n)
        for t, res in enumerate(results):
            assert isinstance(res, str | LLMRelayError), (r, t, res)
            key = "answered" if isinstance(res, str) else type(res).__name__
            outcomes[key] = outcomes.get(key, 0) + 1
    report("close_during_sync_streams", {"rounds": rounds, "outcomes": outcomes})


def _stream_and_close(svc: LLMService, r: int, threads_n: int) -> list[Any]:
    """Start ``threads_n`` sync streams, close ``svc`` from this thread, join them all."""
    results: list[Any] = [None] * threads_n
    going = threading.Barrier(threads_n + 1)

    def work(t: int) -> None:
        going.wait()
        try:
            results[t] = "".join(c.text for c in svc.stream(f"round {r} thread {t} go"))
        except BaseException as e:  # recorded: the caller asserts what it is
            results[t] = e

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads_n)]
    for th in threads:
        th.start()
    going.wait()
    time.sleep(0.01 * (r % 5))  # close at different points of the streams
    svc.close(drain_s=0.05 if r % 2 else 5.0)  # odd rounds stop streams, even ones drain
    for th in threads:
        th.join(timeout=15)
    hung = [t for t, th in enumerate(threads) if th.is_alive()]
    assert not hung, f"round {r}: threads {hung} still waiting after close()"
    return results
