"""Cancellation at random points of the pipeline leaves nothing behind.

Thousands of calls (plain and streamed, duplicates that join a leader, calls to a
rate-limited deployment, calls to a slow one that sometimes hangs) are cancelled after
random small delays. Afterwards every slot, queue entry, reservation, dedup entry and
waiter is gone, and closing the service drains or cancels what is left, cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from typing import Any

import pytest

from llmrelay import (
    LLMService,
    OrchestratorConfig,
    RateLimitConfig,
    RequestTimeouts,
    _core,
)
from llmrelay.errors import LLMRelayError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory
from soak_helpers import count, report

WAVE = 250
MODELS = ["openai/gpt-4o-mini", "claude/claude-haiku-4-5", "local/llama3.2"]
RPM, BURST = 6_000.0, 10.0


async def wait_until(cond: Any, limit_s: float = 5.0) -> None:
    """Poll a condition on a real server (bounded), not for time logic."""
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def short_sleep(delay: float) -> None:
    """Backoffs and rate-limit waits really yield, but never for long."""
    await asyncio.sleep(min(delay, 0.003))


def cancel_config(make_config: ConfigFactory) -> Any:
    return make_config(
        provider_kw={
            "openai": {"max_concurrency": 4},
            "claude": {"rate_limit": RateLimitConfig(requests_per_minute=RPM, burst=BURST)},
            "local": {"max_concurrency": 2},
        },
        orchestrator=OrchestratorConfig(
            backoff_initial_s=0.001, backoff_max_s=0.005, adaptive_concurrency=False
        ),
        timeouts=RequestTimeouts(read_s=0.3, stream_idle_s=0.3, total_s=1.0),
    )


async def _call(svc: LLMService, i: int, rng: random.Random) -> Any:
    model = rng.choice(MODELS)
    dup = rng.random() < 0.4
    prompt = f"dup {i % 7}" if dup else f"call {i}"
    if rng.random() < 0.3:
        return [c.text async for c in svc.astream(prompt, model, temperature=0)]
    return await svc.achat(prompt, model, temperature=0 if dup else 0.5, cache=not dup)


def check_nothing_left(
    svc: LLMService, clock: _core.ManualClock, fakes: dict[str, FakeProvider]
) -> dict[str, Any]:
    eng = svc._engine
    left: dict[str, Any] = {}
    for name, rt in eng.orchestrator.runtimes.items():
        s = rt.scheduler
        assert (s.in_flight, s.queued, len(rt.waiters)) == (0, 0, 0), (name, s.stats())
        assert rt.deployment.health.in_flight == 0, name
        left[name] = s.stats()
    assert eng.dedup.in_flight() == 0 and eng.dedup.waiting() == 0 and len(eng.dedup) == 0
    assert eng.dedup.parked() == 0, "a follower's future is still parked in the core"
    # every attempt that reached a provider is in the metrics (cancelled ones included)
    snap = svc.metrics.snapshot()
    for s in snap.series:
        failed = sum(v for k, v in s.counters.items() if k.startswith("failures."))
        assert s.counter("requests") == s.counter("successes") + failed, s
    for dep, fake in fakes.items():
        counted = sum(s.counter("requests") for s in snap.for_deployment(dep))
        refused = sum(s.counter("failures.CircuitOpenError") for s in snap.for_deployment(dep))
        assert fake.request_count <= counted - refused, (dep, fake.request_count, counted)
    assert not [t for t in eng._in_flight if not t.done()]
    # every reservation was spent or refunded: given time, the bucket is full again
    clock.advance(3_600)
    key = eng.orchestrator.runtimes["claude"].rate_keys["rpm"]
    assert eng.orchestrator.limiter.available(key) == pytest.approx(BURST)
    return left


def _by_deployment(fakes: dict[str, FakeProvider]) -> dict[str, FakeProvider]:
    return {"openai": fakes["openai"], "claude": fakes["anthropic"], "local": fakes["ollama"]}


def _asyncio_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.WARNING
    ]


async def test_random_cancellation_leaks_nothing(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    n = count(2_000, 10_000)
    rng = random.Random(99)
    fakes["openai"].latency_s = 0.01
    fakes["openai"].inject("hang", ratio=0.05, seed=3)
    fakes["ollama"].latency_s = 0.003
    fakes["anthropic"].inject("server_error", ratio=0.1, seed=4)
    clock = _core.ManualClock()
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    async with LLMService(cancel_config(make_config), clock=clock, sleep=short_sleep) as svc:
        loop = asyncio.get_running_loop()
        for base in range(0, n, WAVE):
            tasks = [
                asyncio.create_task(_call(svc, i, rng)) for i in range(base, min(n, base + WAVE))
            ]
            for t in tasks:
                if rng.random() < 0.7:
                    delay = rng.choice((0.0, 0.0, rng.uniform(0, 0.002), rng.uniform(0, 0.03)))
                    loop.call_later(delay, t.cancel)
            done, pending = await asyncio.wait(tasks, timeout=30)
            assert not pending
            for t in done:
                if t.cancelled():
                    outcomes["cancelled"] += 1
                elif isinstance(t.exception(), LLMRelayError):
                    outcomes[type(t.exception()).__name__] += 1
                else:
                    assert t.exception() is None, repr(t.exception())
                    outcomes["answered"] += 1
        await asyncio.sleep(0.05)  # let late call_later cancels of finished tasks fire
        stats = check_nothing_left(svc, clock, _by_deployment(fakes))
    assert outcomes["cancelled"] > n // 3 and outcomes["answered"] > n // 10
    assert not _asyncio_errors(caplog)
    report(
        "cancel",
        {
            "tasks": n,
            "outcomes": dict(outcomes),
            "scheduler": {k: {s: v for s, v in d.items()} for k, d in stats.items()},
            "wall_s": round(time.perf_counter() - started, 2),
        },
    )


async def test_aclose_with_work_in_flight_is_clean(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    rounds = count(5, 25)
    rng = random.Random(5)
    for r in range(rounds):
        for fake in fakes.values():
            fake.reset()
        fakes["openai"].latency_s = 0.02
        fakes["openai"].inject("hang", ratio=0.2, seed=r)
        clock = _core.ManualClock()
        svc = LLMService(cancel_config(make_config), clock=clock, sleep=short_sleep)
        tasks = [asyncio.create_task(_call(svc, i, rng)) for i in range(100)]
        await asyncio.sleep(rng.uniform(0, 0.02))
        await asyncio.wait_for(svc.aclose(), 10)
        done, pending = await asyncio.wait(tasks, timeout=10)
        assert not pending
        for t in done:
            assert (
                t.cancelled() or t.exception() is None or isinstance(t.exception(), LLMRelayError)
            ), repr(t.exception())
        check_nothing_left(svc, clock, _by_deployment(fakes))
        with pytest.raises(LLMRelayError, match="closed"):
            await svc.achat("after close")
    assert not _asyncio_errors(caplog)


def test_sync_close_with_threads_waiting(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """close() from plain code while other threads are blocked in chat()."""
    import threading

    fakes["openai"].inject("hang")
    svc = LLMService(make_config(timeouts=RequestTimeouts(read_s=30, total_s=30)))
    results: list[BaseException | None] = []

    def work() -> None:
        try:
            svc.chat(f"blocked {threading.get_ident()}", timeout=30.0)
            results.append(None)
        except BaseException as e:
            results.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while fakes["openai"].request_count < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    svc.close(drain_s=0.2)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 8
    # a call cut short by close() ends typed (not a bare CancelledError in the caller)
    assert all(isinstance(e, LLMRelayError) and "closed" in str(e) for e in results), results


async def test_aclose_ends_hung_calls_typed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """Calls still running when the drain ends are stopped, and their callers get a typed error."""
    fakes["openai"].inject("hang")
    svc = LLMService(make_config(timeouts=RequestTimeouts(read_s=30, total_s=30)))
    tasks = [asyncio.create_task(svc.achat(f"hung {i}", temperature=0)) for i in range(10)]
    tasks += [asyncio.create_task(svc.achat("hung dup", temperature=0)) for _ in range(5)]
    await wait_until(lambda: fakes["openai"].request_count >= 11)
    await asyncio.wait_for(svc.aclose(drain_s=0.2), 10)
    done, pending = await asyncio.wait(tasks, timeout=10)
    assert not pending
    for t in done:
        assert not t.cancelled()
        assert isinstance(t.exception(), LLMRelayError) and "closed" in str(t.exception())
    assert svc._engine.dedup.in_flight() == 0 and svc._engine.dedup.waiting() == 0


async def test_aclose_ends_hung_streams_typed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """Streams in flight at close end too: hung before their first byte, or between chunks."""
    fakes["openai"].inject("hang", times=3)
    fakes["anthropic"].stream_chunk_delay_s = 30.0
    svc = LLMService(make_config(timeouts=RequestTimeouts(read_s=60, total_s=60)))

    async def consume(model: str) -> list[str]:
        return [c.text async for c in svc.astream("a stream at close", model)]

    tasks = [asyncio.create_task(consume("openai/gpt-4o-mini")) for _ in range(3)]
    tasks += [asyncio.create_task(consume("claude/claude-haiku-4-5")) for _ in range(3)]
    await wait_until(
        lambda: fakes["openai"].request_count >= 3 and fakes["anthropic"].request_count >= 3
    )
    await asyncio.wait_for(svc.aclose(drain_s=0.2), 10)
    done, pending = await asyncio.wait(tasks, timeout=10)
    for t in pending:
        t.cancel()
    assert not pending, "streams still running after aclose()"
    for t in done:
        assert not t.cancelled()
        assert isinstance(t.exception(), LLMRelayError), repr(t.exception())
    for name, rt in svc._engine.orchestrator.runtimes.items():
        assert rt.scheduler.in_flight == 0, name


async def test_aclose_drains_calls_not_the_callers_tasks(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """A caller whose call is done is left alone; a stream that can finish in the drain does."""
    fakes["openai"].latency_s = 0.05
    fakes["anthropic"].stream_chunk_delay_s = 0.02
    svc = LLMService(make_config())
    go_on = asyncio.Event()

    async def worker() -> str:
        r = await svc.achat("then keep working")
        await go_on.wait()  # the caller's own work, after its call
        return r.text

    async def streamer() -> str:
        return "".join([c.text async for c in svc.astream("drained", "claude/claude-haiku-4-5")])

    w = asyncio.create_task(worker())
    st = asyncio.create_task(streamer())
    await wait_until(lambda: fakes["anthropic"].request_count >= 1)
    await asyncio.sleep(0.01)
    t0 = time.monotonic()
    await asyncio.wait_for(svc.aclose(drain_s=5.0), 10)
    assert time.monotonic() - t0 < 4.0  # drained when the calls ended, not the tasks
    assert "drained" in await st
    assert not w.done()
    go_on.set()
    assert "then keep working" in await asyncio.wait_for(w, 5)
