"""Metrics that say what happened: client-side throttling is its own outcome, each cache
lookup is counted once, and requests the cache skips are counted by reason."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmrelay import CacheConfig, LLMService, RateLimitConfig, _core
from llmrelay.errors import ClientThrottledError, RateLimitError
from service_helpers import ConfigFactory


async def test_client_side_throttling_is_its_own_outcome(make_config: ConfigFactory) -> None:
    clock = _core.ManualClock()  # frozen: the second call finds no room
    config = make_config(
        cache=CacheConfig(enabled=False),
        provider_kw={"openai": {"rate_limit": RateLimitConfig(requests_per_minute=60, burst=1)}},
    )
    async with LLMService(config, clock=clock) as svc:
        await svc.achat("first")
        with pytest.raises(ClientThrottledError) as info:
            await svc.achat("second", timeout=0.5)
        assert isinstance(info.value, RateLimitError)  # still caught as a rate limit
        (s,) = svc.metrics.snapshot().for_deployment("openai")
    assert s.counter("throttled") == 1
    assert s.counter("requests") == 1 and s.counter("successes") == 1
    assert s.counter("failures.RateLimitError") == 0
    assert s.counter("failures.ClientThrottledError") == 0
    assert s.histograms["latency"]["count"] == 1  # the refusal's microseconds stay out


async def test_each_cache_lookup_is_counted_once(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    disk = str(tmp_path / "cache")
    prompts = [f"prompt {i}" for i in range(20)]
    async with LLMService(make_config(cache=CacheConfig(disk_path=disk))) as svc:
        for p in prompts:
            await svc.achat(p, temperature=0)
        first = svc.metrics.snapshot().cache
    assert first["misses"] == 20 and first["hits"] == 0
    assert first["memory_misses"] == 20 and first["disk_misses"] == 20
    # a new service: every answer comes from disk, each lookup counted once
    async with LLMService(make_config(cache=CacheConfig(disk_path=disk))) as svc:
        for p in prompts:
            r = await svc.achat(p, temperature=0)
            assert r.cached
        await svc.achat("a new one", temperature=0)
        c = svc.metrics.snapshot().cache
        series = svc.metrics.snapshot().for_deployment("openai")
    assert c["hits"] == 20 and c["misses"] == 1
    assert c["memory_misses"] == 21 and c["memory_hits"] == 0
    assert c["disk_hits"] == 20 and c["disk_misses"] == 1
    assert sum(s.counter("cache_hits.disk") for s in series) == 20


def test_sync_cache_lookups_are_counted_once(make_config: ConfigFactory, tmp_path: Path) -> None:
    disk = str(tmp_path / "cache")
    with LLMService(make_config(cache=CacheConfig(disk_path=disk))) as svc:
        svc.chat("sync prompt", temperature=0)
        svc.chat("sync prompt", temperature=0)  # memory hit in the calling thread
        c = svc.metrics.snapshot().cache
    assert c["hits"] == 1 and c["misses"] == 1
    assert c["memory_hits"] == 1 and c["memory_misses"] == 1 and c["disk_misses"] == 1


async def test_skipped_lookups_are_counted_by_reason_and_explained_once(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="llmrelay"):
        async with LLMService(make_config()) as svc:
            for i in range(5):
                await svc.achat(f"creative {i}")  # default temperature: not cached
            await svc.achat("creative 0")
            await svc.achat("asked not to", temperature=0, cache=False)
            snap = svc.metrics.snapshot()
    assert snap.total("cache_skipped.nondeterministic") == 6
    assert snap.total("cache_skipped.requested") == 1
    assert snap.cache["hits"] == 0 and snap.cache["misses"] == 0  # never looked up
    told = [m for m in caplog.messages if "not cached" in m]
    assert len(told) == 1 and "temperature=0" in told[0] and "cache_nondeterministic" in told[0]
