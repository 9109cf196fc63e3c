"""Rate-limit reservations are refunded on every path that sends nothing: a cancel while
queued for a slot, a queue timeout, a breaker refusal, a limiter refusal. The limiter's
clock is frozen (a manual clock), so any token booked and not given back shows.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from llmrelay import (
    CacheConfig,
    CircuitBreakerConfig,
    LLMService,
    OrchestratorConfig,
    RateLimitConfig,
    _core,
)
from llmrelay.errors import CircuitOpenError, LLMRelayError
from service_helpers import ConfigFactory
from soak_helpers import count, report

LIMITS = RateLimitConfig(requests_per_minute=100_000, tokens_per_minute=10_000_000, burst=5_000)


def _limiter(svc: LLMService) -> dict[str, float]:
    return svc.metrics.snapshot().limiter["openai"]


async def _settle(svc: LLMService) -> None:
    for _ in range(50):  # cancelled tasks unwind over a few turns of the loop
        if _limiter(svc)["outstanding"] == 0:
            return
        await asyncio.sleep(0.01)


async def test_cancellation_storm_refunds_every_reservation(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    n = count(300, 3_000)
    fakes["openai"].inject("hang")  # the one call sent holds the only slot
    clock = _core.ManualClock()
    config = make_config(
        cache=CacheConfig(enabled=False),
        orchestrator=OrchestratorConfig(adaptive_concurrency=False),
        provider_kw={"openai": {"max_concurrency": 1, "rate_limit": LIMITS}},
    )
    rng = random.Random(9)
    async with LLMService(config, clock=clock) as svc:
        holder = asyncio.create_task(svc.achat("holds the slot", timeout=120))
        for _ in range(2000):  # bounded poll of the fake's process
            if fakes["openai"].request_count >= 1:
                break
            await asyncio.sleep(0.005)
        after_send = _limiter(svc)
        tasks = []
        for i in range(n):
            # some wait out a short deadline in the queue, the rest are cancelled there
            timeout = 0.05 if i % 5 == 0 else 120.0
            tasks.append(asyncio.create_task(svc.achat(f"queued {i}", timeout=timeout)))
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        booked = _limiter(svc)["outstanding"]
        assert booked > 0  # they really hold reservations while queued
        for i, t in enumerate(tasks):
            if not t.done() and (i % 5 or rng.random() < 0.5):
                t.cancel()
            if rng.random() < 0.2:
                await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await _settle(svc)
        end = _limiter(svc)
        assert end["outstanding"] == 0
        # the clock is frozen: all capacity but the one sent call's is back
        for dim in ("available.rpm", "available.tpm"):
            assert end[dim] == after_send[dim], (dim, end[dim], after_send[dim])
        assert fakes["openai"].request_count == 1
    report(
        "refunds_after_cancellation_storm",
        {
            "calls": n,
            "reservations_while_queued": int(booked),
            "cancelled": sum(isinstance(r, asyncio.CancelledError) for r in results),
            "timed_out": sum(isinstance(r, LLMRelayError) for r in results),
            "outstanding_after": int(end["outstanding"]),
        },
    )


async def test_breaker_refusal_refunds_its_reservation(
    make_config: ConfigFactory, fakes: dict[str, Any]
) -> None:
    fakes["openai"].inject("unavailable")
    clock = _core.ManualClock()  # frozen: the breaker stays open
    config = make_config(
        cache=CacheConfig(enabled=False),
        orchestrator=OrchestratorConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(minimum_calls=2, window_size=2),
        provider_kw={"openai": {"rate_limit": LIMITS}},
    )
    async with LLMService(config, clock=clock) as svc:
        for i in range(2):
            with pytest.raises(LLMRelayError):
                await svc.achat(f"fails {i}")
        before = _limiter(svc)
        for i in range(20):
            with pytest.raises(CircuitOpenError):
                await svc.achat(f"refused {i}")
        after = _limiter(svc)
        assert after == before and after["outstanding"] == 0
