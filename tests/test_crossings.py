"""Python->Rust crossings per uncached provider call, counted with ``sys.setprofile``.

Every call of a method or function of ``llmrelay._core`` is a ``c_call`` event whose
callable is bound to a core object (or the module). Attribute reads of the core's
properties are not calls and are not counted.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import msgspec
import pytest

from llmrelay import CacheConfig, LLMService, RateLimitConfig, SharedStateConfig
from llmrelay.testing import FakeProvider
from redis_server import RedisServer
from service_helpers import ConfigFactory

#: What the gate's adoption brought the orchestration of one attempt down to:
#: the breaker look of the selector, one admit, one settle.
GATE_CROSSINGS_PER_CALL = 3
_GATE_NAMES = {"Gate", "PriorityScheduler", "CircuitBreaker", "RateLimiter", "SharedLimiter"}


def _core_target(fn: Any) -> str | None:
    owner = getattr(fn, "__self__", None)
    if owner is None:
        return None
    if getattr(owner, "__name__", None) == "llmrelay._core":
        return f"_core.{fn.__name__}"
    cls = type(owner)
    if cls.__module__ == "llmrelay._core":
        return f"{cls.__name__}.{fn.__name__}"
    return None


@contextmanager
def counting() -> Iterator[collections.Counter[str]]:
    """Count the core's calls made while the block runs (this thread)."""
    seen: collections.Counter[str] = collections.Counter()

    def prof(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            name = _core_target(arg)
            if name is not None:
                seen[name] += 1

    sys.setprofile(prof)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def gate_crossings(seen: collections.Counter[str]) -> int:
    """The crossings of the orchestration (gate, scheduler, breaker, limiter)."""
    return sum(n for k, n in seen.items() if k.split(".")[0] in _GATE_NAMES)


@pytest.mark.parametrize("limited", [False, True], ids=["no_limits", "rpm_tpm_limits"])
async def test_crossings_per_uncached_provider_call(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], limited: bool
) -> None:
    limits = RateLimitConfig(requests_per_minute=6_000, tokens_per_minute=10_000_000)
    cfg = make_config(
        cache=CacheConfig(enabled=False),
        provider_kw={"openai": {"rate_limit": limits}} if limited else {},
    )
    async with LLMService(cfg) as svc:
        for i in range(3):
            await svc.achat(f"warm {i}")
        calls = 5
        with counting() as seen:
            for i in range(calls):
                await svc.achat(f"count {i}")
        assert fakes["openai"].request_count == 3 + calls
        per_call = {k: v / calls for k, v in sorted(seen.items())}
        total = sum(seen.values()) / calls
        print(f"\ncore crossings per uncached call ({limited=}): {total:g} {per_call}")
        assert gate_crossings(seen) / calls == GATE_CROSSINGS_PER_CALL, per_call
        # issue 11's bound for a whole provider call (the gate's three, the HTTP
        # exchange, the metrics record)
        assert total <= MAX_CROSSINGS_PER_PROVIDER_CALL, per_call


#: Issue 11's bounds on the crossings of one call.
MAX_CROSSINGS_PER_PROVIDER_CALL = 6
MAX_CROSSINGS_PER_MEMORY_HIT = 2


@pytest.mark.parametrize("disk", [False, True], ids=["memory_only", "with_disk_tier"])
@pytest.mark.parametrize(("name", "kind"), [("openai", "openai"), ("claude", "anthropic")])
async def test_crossings_per_memory_cache_hit(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    name: str,
    kind: str,
    disk: bool,
    tmp_path: Any,
) -> None:
    """A memory-cache hit through ``achat`` crosses twice: the cache key, and the lookup
    (which counts the hit in the same call), for any provider kind."""
    cache = CacheConfig(disk_path=str(tmp_path / "cache")) if disk else CacheConfig()
    async with LLMService(make_config(cache=cache, default_model=f"{name}/m")) as svc:
        first = await svc.achat("the same question", temperature=0)
        calls = 5
        with counting() as seen:
            for _ in range(calls):
                hit = await svc.achat("the same question", temperature=0)
        assert hit.cached and hit.text == first.text
        assert fakes[kind].request_count == 1
        per_call = {k: v / calls for k, v in sorted(seen.items())}
        assert sum(seen.values()) / calls <= MAX_CROSSINGS_PER_MEMORY_HIT, per_call
        snap = svc.metrics.snapshot()
        assert snap.total("cache_hits.memory") == calls


#: Dedup's crossings with the followers' futures held in the core: a leader joins and
#: completes; a follower joins (its future is parked by that join and woken by the
#: leader's complete). Before (Python kept a ticket->future map) the same counts held,
#: plus Python set each follower's future itself.
DEDUP_CROSSINGS_LEADER = 2
DEDUP_CROSSINGS_FOLLOWER = 1


def dedup_crossings(seen: collections.Counter[str]) -> int:
    """The crossings into the deduplicator."""
    return sum(n for k, n in seen.items() if k.startswith("RequestDeduplicator."))


async def test_crossings_of_deduplicated_calls(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    async with LLMService(make_config()) as svc:
        await svc.achat("warm", temperature=0)
        calls = 5
        with counting() as seen:
            for i in range(calls):
                await svc.achat(f"lead {i}", temperature=0)
        total = sum(seen.values()) / calls
        print(f"\ncore crossings per deduplicated leader call: {total:g} {sorted(seen.items())}")
        assert dedup_crossings(seen) == DEDUP_CROSSINGS_LEADER * calls, seen
        fake.latency_s = 0.05
        with counting() as seen:
            await asyncio.gather(*(svc.achat("joined", temperature=0) for _ in range(calls)))
        assert fake.request_count == 1 + calls + 1
        print(f"core crossings of 1 leader + {calls - 1} followers: {dict(sorted(seen.items()))}")
        want = DEDUP_CROSSINGS_LEADER + DEDUP_CROSSINGS_FOLLOWER * (calls - 1)
        assert dedup_crossings(seen) == want, seen


async def _until(cond: Any) -> None:
    """Poll a condition on the fake server (bounded), not for time logic."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 5.0
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


#: A leader cancelled while its 3 oldest followers are cancelled too, in the same loop
#: turn: the core passes the lead to the live 4th follower in the leader's one call,
#: each cancelled follower's handler makes one, the new leader completes. Before, the
#: leader's hand-over cost one `fail` per cancelled follower it skipped, and each of
#: those then called `leave` as well: 8.
DEDUP_CROSSINGS_PROMOTION_PAST_3_CANCELLED = 5


async def test_crossings_of_a_promotion_past_cancelled_followers(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.inject("hang", times=1)
    async with LLMService(make_config()) as svc:
        dedup = svc._engine.dedup
        assert dedup is not None
        leader = asyncio.create_task(svc.achat("promote me", temperature=0))
        await _until(lambda: fake.request_count == 1)
        followers = [asyncio.create_task(svc.achat("promote me", temperature=0)) for _ in range(4)]
        await _until(lambda: dedup.waiting() == 4)
        with counting() as seen:
            leader.cancel()
            for t in followers[:3]:
                t.cancel()
            r = await asyncio.wait_for(followers[3], 5)
        assert "promote me" in r.text and fake.request_count == 2
        for t in [leader, *followers[:3]]:
            with pytest.raises(asyncio.CancelledError):
                await t
        print(f"\ncore crossings of the promotion: {sorted(seen.items())}")
        assert dedup_crossings(seen) == DEDUP_CROSSINGS_PROMOTION_PAST_3_CANCELLED, seen
        assert (dedup.in_flight(), dedup.waiting(), dedup.parked(), len(dedup)) == (0, 0, 0, 0)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_crossings_with_shared_limits(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """Shared limits (Redis) cost no crossing more: the gate holds the shared limiter,
    its check settles the future handed to ``admit``, and the refund, reconcile and
    pause are the core's own inside ``cancel``/``settle``."""
    limits = RateLimitConfig(requests_per_minute=6_000, tokens_per_minute=10_000_000)
    redis = RedisServer()
    try:
        cfg = make_config(
            cache=CacheConfig(enabled=False), provider_kw={"openai": {"rate_limit": limits}}
        )
        shared = SharedStateConfig(url=redis.url, namespace=f"crossings{os.getpid()}")
        async with LLMService(msgspec.structs.replace(cfg, shared=shared)) as svc:
            for i in range(3):
                await svc.achat(f"warm {i}")
            calls = 5
            with counting() as seen:
                for i in range(calls):
                    await svc.achat(f"count {i}")
            stats = svc.metrics.snapshot().shared
        assert fakes["openai"].request_count == 3 + calls
        per_call = {k: v / calls for k, v in sorted(seen.items())}
        print(f"\ncore crossings per uncached call (shared limits): {per_call}")
        assert gate_crossings(seen) / calls == GATE_CROSSINGS_PER_CALL, per_call
        # and they were decided by Redis
        assert stats["deployments"]["openai"]["shared_checks"] == 3 + calls
        assert stats["deployments"]["openai"]["shared_fallbacks"] == 0
        assert stats["reconciles"] >= 3
    finally:
        redis.stop()
